"""Bad input gets a clear error, never silent corruption (Pyro)."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
import zuko

from ebmppl.pyro import FlowMCMC, Potential
from .pyro_util import draws, run_flow_mcmc, stats


def test_energy_of_wrong_output_shape_names_both_shapes():
    bad = Potential(lambda x: (x**2).sum(-1, keepdim=True), event_shape=(2,))
    with pytest.raises(ValueError, match=r"\(5, 1\).*\(5, 2\).*\(5,\)"):
        bad.log_prob(torch.zeros(5, 2))

    def model():
        pyro.sample("x", bad)

    with pytest.raises(ValueError, match=r"energy returned shape \(1\b"):
        run_flow_mcmc(model=model, num_walkers=4, num_warmup=10, num_samples=10)


def test_nan_region_is_never_entered_and_rejections_are_counted():
    def potential(params):  # a standard normal, undefined where x[0] > 0.5
        x = params["x"]
        return torch.where(x[0] > 0.5, torch.nan, 0.5 * (x**2).sum())

    mcmc = run_flow_mcmc(potential_fn=potential, num_warmup=200, num_samples=200,
                         initial_params={"x": -torch.ones(20, 2)})
    x = draws(mcmc)
    assert x[..., 0].max() <= 0.5
    assert int(mcmc.kernel.num_nonfinite.sum()) > 0
    assert np.isfinite(stats(mcmc)["potential_energy"]).all()


def test_energy_nan_everywhere_fails_at_initialisation():
    with pytest.raises(ValueError, match="NaN or infinite at every initial point"):
        run_flow_mcmc(potential_fn=lambda p: torch.nan * p["x"].sum(),
                      initial_params={"x": torch.zeros(4, 2)})

    def model():
        pyro.sample("x", Potential(lambda x: torch.nan * x.sum(-1), event_shape=(2,)))

    with pytest.raises(ValueError, match="not finite at any initial point"):
        run_flow_mcmc(model=model, num_walkers=4)


@pytest.mark.parametrize("flow", [
    zuko.flows.NAF(features=2),
    dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1), [T.block_autoregressive(2)]),
], ids=["zuko-NAF", "pyro-BNAF"])
def test_flow_with_no_exact_inverse_is_refused(flow):
    with pytest.raises(ValueError, match="no exact inverse"):
        run_flow_mcmc(potential_fn=lambda p: (p["x"] ** 2).sum(), flow=flow,
                      initial_params={"x": torch.zeros(4, 2)})


def test_one_walker_or_mismatched_walkers_is_refused():
    with pytest.raises(ValueError, match="num_walkers >= 2"):
        FlowMCMC(potential_fn=lambda p: (p["x"] ** 2).sum(), num_walkers=1)
    with pytest.raises(ValueError, match="initial_params have 4 walkers"):
        run_flow_mcmc(potential_fn=lambda p: (p["x"] ** 2).sum(), num_walkers=8,
                      initial_params={"x": torch.zeros(4, 2)})


def test_potential_fn_without_initial_params_is_refused():
    with pytest.raises(ValueError, match="needs `initial_params`"):
        run_flow_mcmc(potential_fn=lambda p: (p["x"] ** 2).sum())


def test_potential_fn_that_cannot_be_vectorized_is_explained():
    def potential(params):
        if params["x"].sum().item() > 0:  # a Python branch on a tensor value
            return (params["x"] ** 2).sum()
        return params["x"].abs().sum()

    with pytest.raises(ValueError, match="torch.func.vmap"):
        run_flow_mcmc(potential_fn=potential, initial_params={"x": torch.zeros(4, 2)})


def test_discrete_latent_site_is_refused():
    def model():
        pyro.sample("k", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"discrete"):
        run_flow_mcmc(model=model, num_walkers=4, num_warmup=10, num_samples=10)


def test_walkers_where_the_model_fails_numerically_get_log_density_minus_inf():
    """A Cholesky factor that exists for some walkers only: those are rejected, the others evaluated."""
    from ebmppl.pyro.kernels.target import model_target

    def model():
        a = pyro.sample("a", dist.Normal(3.0, 0.1))  # its prior draws (Pyro traces one) are positive
        cov = a[..., None, None] * torch.ones(1, 1)  # positive definite only for a > 0
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(1), scale_tril=torch.linalg.cholesky(cov)),
                    obs=torch.zeros(1))

    target, _, _, _ = model_target(model, (), {}, num_walkers=2, initial_params={"a": torch.tensor([1.0, 2.0])})
    value = target.logdensity(torch.tensor([[1.0], [-1.0]]))
    assert torch.isfinite(value[0]) and value[1] == -math.inf
    one = torch.distributions.Normal(3.0, 0.1).log_prob(torch.tensor(1.0)) + \
        torch.distributions.MultivariateNormal(torch.zeros(1), torch.eye(1)).log_prob(torch.zeros(1))
    assert torch.allclose(value[0], one)


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_defensive_share_out_of_range_is_refused(share):
    with pytest.raises(ValueError, match=r"defensive must be in \[0, 1\)"):
        FlowMCMC(potential_fn=lambda x: x, defensive=share)
