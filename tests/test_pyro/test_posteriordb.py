"""posteriordb regression (Pyro): default FlowMCMC and NeuTraHMC on the reference posteriors.

Each parameter's mean must lie within 0.25 reference sd of the reference mean and its
sd within 20% of the reference sd (posteriordb's stat_comp_benchmarks check), with the
budget of ``benchmarks/posteriordb.py``: 8 walkers, 500 warm-up iterations, 500 draws.
One posterior runs in ``make test``, all eleven in ``make test-slow``; the NumPyro side is
``tests/test_numpyro/test_posteriordb.py``.
"""

import pyro
import pytest
from pyro.infer import MCMC

from ebmppl.pyro import FlowMCMC, NeuTraHMC
from test_common.posteriordb import FAST, NAMES, pdb


@pytest.mark.parametrize("kernel", [FlowMCMC, NeuTraHMC])
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in NAMES])
def test_default_kernel_matches_the_reference(name, kernel):
    model, kwargs = pdb.pyro_model(name)
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel(model, num_walkers=8), warmup_steps=500, num_samples=500, disable_progbar=True)
    mcmc.run(**kwargs)
    result = pdb.check(name, pdb.stan_draws(name, mcmc.get_samples()))
    assert result["passed"], {p: (round(r["z"], 3), round(r["sd_ratio"], 3)) for p, r in result["params"].items()}
