"""posteriordb regression (NumPyro): default FlowMCMC and NeuTraHMC on the reference posteriors.

Each parameter's mean must lie within 0.25 reference sd of the reference mean and its
sd within 20% of the reference sd (posteriordb's stat_comp_benchmarks check), with the
budget of ``benchmarks/posteriordb.py``: 8 chains, 500 warm-up iterations, 500 draws.
One posterior runs in ``make test``, all eleven in ``make test-slow``; the Pyro side is
``tests/test_pyro/test_posteriordb.py``.
"""

import jax
import pytest
from numpyro.infer import MCMC

from ebmppl.numpyro import FlowMCMC, NeuTraHMC
from test_common.posteriordb import FAST, NAMES, pdb


@pytest.mark.parametrize("kernel", [FlowMCMC, NeuTraHMC])
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in NAMES])
def test_default_kernel_matches_the_reference(name, kernel):
    model, kwargs = pdb.numpyro_model(name)
    mcmc = MCMC(kernel(model), num_warmup=500, num_samples=500, num_chains=8,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), **kwargs)
    result = pdb.check(name, pdb.stan_draws(name, mcmc.get_samples()))
    assert result["passed"], {p: (round(r["z"], 3), round(r["sd_ratio"], 3)) for p, r in result["params"].items()}
