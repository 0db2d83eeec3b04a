"""to_arviz on both backends: shapes, names, and ESS / R-hat computed from it."""

import arviz as az
import jax
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
from numpyro.infer import MCMC as NumPyroMCMC
from numpyro.infer import NUTS as NumPyroNUTS
from pyro.infer import MCMC as PyroMCMC
from pyro.infer import NUTS as PyroNUTS

import ebmppl.numpyro
import ebmppl.pyro
from ebmppl.diagnostics import to_arviz

FLOW_STATS = ("acceptance_rate", "lp", "global_acceptance_rate", "local_acceptance_rate")


def numpyro_flow_mcmc():
    def model():
        numpyro.sample("scale", ndist.LogNormal(0.0, 0.5))
        numpyro.sample("loc", ndist.Normal(1.0, 2.0).expand([3]).to_event(1))

    mcmc = NumPyroMCMC(ebmppl.numpyro.FlowMCMC(model), num_warmup=200, num_samples=100,
                       num_chains=10, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(0))
    return mcmc


def pyro_flow_mcmc():
    def model():
        pyro.sample("scale", pdist.LogNormal(0.0, 0.5))
        pyro.sample("loc", pdist.Normal(1.0, 2.0).expand([3]).to_event(1))

    pyro.set_rng_seed(0)
    mcmc = PyroMCMC(ebmppl.pyro.FlowMCMC(model, num_walkers=10), num_samples=100, warmup_steps=200,
                    disable_progbar=True)
    mcmc.run()
    return mcmc


@pytest.mark.parametrize("run", [numpyro_flow_mcmc, pyro_flow_mcmc], ids=["numpyro", "pyro"])
def test_flow_mcmc_walkers_become_chains(run):
    mcmc = run()
    data = to_arviz(mcmc)
    posterior, stats = data["posterior"], data["sample_stats"]
    assert posterior["scale"].shape == (10, 100) and posterior["loc"].shape == (10, 100, 3)
    assert float(posterior["scale"].min()) > 0  # constrained values
    for name in FLOW_STATS:
        assert stats[name].shape == (10, 100)
    acceptance = np.asarray(stats["acceptance_rate"])
    assert ((acceptance >= 0) & (acceptance <= 1)).all()
    # lp is the log density (in unconstrained space) of each draw
    assert np.isfinite(np.asarray(stats["lp"])).all()
    ess = az.ess(data)
    rhat = az.rhat(data)
    assert float(ess["loc"].min()) > 100  # 1000 draws, well mixed
    assert float(rhat["loc"].max()) < 1.05


def test_pyro_walkers_match_get_samples():
    mcmc = pyro_flow_mcmc()
    walkers = mcmc.get_samples(group_by_chain=True)["loc"].numpy()  # (walkers, draws, 3)
    assert walkers.shape[0] == mcmc.kernel.num_walkers
    np.testing.assert_array_equal(np.asarray(to_arviz(mcmc)["posterior"]["loc"]), walkers)
    lp = np.asarray(to_arviz(mcmc)["sample_stats"]["lp"])
    energy = mcmc.kernel.sample_stats[-1]["potential_energy"].numpy()
    np.testing.assert_array_equal(lp, -energy)


def test_pyro_nuts_chain_and_divergences():
    def model():
        pyro.sample("x", pdist.Normal(0.0, 1.0))

    pyro.set_rng_seed(0)
    mcmc = PyroMCMC(PyroNUTS(model), num_samples=50, warmup_steps=50, disable_progbar=True)
    mcmc.run()
    data = to_arviz(mcmc)
    assert data["posterior"]["x"].shape == (1, 50)
    assert data["sample_stats"]["diverging"].shape == (1, 50)


def test_numpyro_nuts_keeps_its_extra_fields():
    def model():
        numpyro.sample("x", ndist.Normal(0.0, 1.0))

    mcmc = NumPyroMCMC(NumPyroNUTS(model), num_warmup=50, num_samples=50, num_chains=2,
                       chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(0), extra_fields=("potential_energy", "accept_prob", "diverging"))
    stats = to_arviz(mcmc)["sample_stats"]
    for name in ("lp", "acceptance_rate", "diverging"):
        assert stats[name].shape == (2, 50)
    np.testing.assert_allclose(np.asarray(stats["lp"]),
                               -np.asarray(mcmc.get_extra_fields(group_by_chain=True)["potential_energy"]))


def test_other_objects_are_refused():
    with pytest.raises(TypeError, match="Pyro or NumPyro MCMC"):
        to_arviz({"x": np.zeros((2, 10))})
