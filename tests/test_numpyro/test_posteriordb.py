"""posteriordb regression (NumPyro): default FlowMCMC and NeuTraHMC on the reference posteriors.

Each parameter's mean must lie within 0.25 reference sd of the reference mean and its
sd within 20% of the reference sd (posteriordb's stat_comp_benchmarks check), with the
budget of ``benchmarks/posteriordb.py``: 8 chains, 500 warm-up iterations, 500 draws.
One posterior runs in ``make test``, all eleven in ``make test-slow``. Where the default
warm-up is too short (``NEEDS_LONGER_WARMUP``), the run must fail and warn, naming the setting,
and pass with the longer warm-up; the Pyro side is
``tests/test_pyro/test_posteriordb.py``.
"""

import warnings

import jax
import pytest
from numpyro.infer import MCMC

from ebmppl.numpyro import FlowMCMC, NeuTraHMC
from test_common.posteriordb import NEEDS_LONGER_WARMUP, cases, failures, outcome, pdb


def run(name, kernel, num_warmup=500):
    """The check's result, the end-of-warm-up check's warnings, and the draws' largest R-hat (walkers as chains)."""
    model, kwargs = pdb.numpyro_model(name)
    mcmc = MCMC(kernel(model), num_warmup=num_warmup, num_samples=500, num_chains=8,
                chain_method="vectorized", progress_bar=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(jax.random.PRNGKey(0), **kwargs)
    return outcome(name, mcmc.get_samples(group_by_chain=True), caught)


@pytest.mark.parametrize(("name", "kernel"), cases([FlowMCMC, NeuTraHMC]))
def test_default_kernel_matches_the_reference(name, kernel):
    result, messages, rhat = run(name, kernel)
    assert result["passed"], failures(result)
    # no false alarm: a warning at the end of warm-up only where the draws' R-hat confirms it
    # (NeuTraHMC on kilpisjarvi passes the check but warns: its draws' R-hat is 1.07, ESS 84)
    assert not messages or rhat > 1.01, (messages, rhat)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kernel_name"), list(NEEDS_LONGER_WARMUP))
def test_a_default_that_fails_warns_and_passes_with_the_warmup_it_asks_for(name, kernel_name):
    kernel = {"FlowMCMC": FlowMCMC, "NeuTraHMC": NeuTraHMC}[kernel_name]
    result, messages, _ = run(name, kernel)
    assert not result["passed"] and len(messages) == 1 and "num_warmup=1000 or more" in messages[0]
    result, messages, _ = run(name, kernel, num_warmup=NEEDS_LONGER_WARMUP[name, kernel_name])
    assert result["passed"], failures(result)
    assert messages == []
