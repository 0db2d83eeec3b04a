"""Potential (Pyro): an unnormalized torch distribution."""

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS

from ebmppl.pyro import Potential


def quadratic(x):
    return 0.5 * (x**2).sum(-1)


def test_log_prob_is_minus_energy_plus_base():
    x = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    torch.testing.assert_close(Potential(quadratic, event_shape=(2,)).log_prob(x), -quadratic(x))
    base = dist.Normal(1.0, 2.0).expand([2]).to_event(1)
    tilted = Potential(quadratic, event_shape=(2,), base=base)
    torch.testing.assert_close(tilted.log_prob(x), -quadratic(x) + base.log_prob(x))


def test_base_with_other_event_shape_is_refused():
    with pytest.raises(ValueError, match=r"event_shape \(3,\).*event_shape \(2,\)"):
        Potential(quadratic, event_shape=(2,), base=dist.Normal(0.0, 1.0).expand([3]).to_event(1))


def test_sampling_directly_says_to_use_mcmc():
    with pytest.raises(NotImplementedError, match="FlowMCMC or NUTS"):
        Potential(quadratic, event_shape=(2,)).sample()

    def model():
        pyro.sample("x", Potential(quadratic, event_shape=(2,)))

    with pytest.raises(NotImplementedError, match="FlowMCMC or NUTS"):
        model()  # running the model forward is sampling it


def test_nuts_samples_a_potential_site_with_positive_support():
    # exp(-x) on x > 0 is Exponential(1): mean 1, within 3 MCSE; NUTS with its defaults.
    def model():
        pyro.sample("x", Potential(lambda x: x, event_shape=(), support=dist.constraints.positive))

    chains = []
    for seed in (0, 1):
        pyro.set_rng_seed(seed)
        mcmc = MCMC(NUTS(model), warmup_steps=300, num_samples=1000, disable_progbar=True)
        mcmc.run()
        chains.append(mcmc.get_samples()["x"].numpy())
    x = np.stack(chains)
    assert x.min() > 0
    assert abs(x.mean() - 1.0) < 3 * float(az.mcse(x, method="mean"))


def test_observed_site_in_a_plate():
    data = torch.arange(6.0).reshape(3, 2)

    def model():
        with pyro.plate("data", 3):
            pyro.sample("obs", Potential(quadratic, event_shape=(2,)), obs=data)

    trace = pyro.poutine.trace(model).get_trace()
    torch.testing.assert_close(trace.nodes["obs"]["fn"].log_prob(data), -quadratic(data))
    torch.testing.assert_close(trace.log_prob_sum(), -quadratic(data).sum())


def test_non_finite_value_gets_a_nan_density_even_with_a_validating_base():
    # a diverged MALA proposal must be rejected by the kernel, not raise the base's support check
    base = dist.LogNormal(0.0, 1.0, validate_args=True).expand([2]).to_event(1)
    potential = Potential(lambda x: x.sum(-1), event_shape=(2,), base=base)
    out = potential.log_prob(torch.tensor([[1.0, 2.0], [float("nan"), 1.0]]))
    expected = -3.0 + base.log_prob(torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(out[0], expected)
    assert torch.isnan(out[1])


@pytest.mark.slow  # a statistical run of ~1 minute: make test-slow (both backends alike)
def test_flow_backbone_potential_is_sampled_by_flow_mcmc():
    # p ∝ exp(-E) q with E = ½ x₀²/4: FlowMCMC in data space against exact draws of q reweighted by exp(-E)
    from ebmppl.pyro.flows import neutra_flow
    from .pyro_util import draws, run_flow_mcmc

    torch.manual_seed(0)
    flow = neutra_flow(2)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    flow.requires_grad_(False)
    energy = lambda x: x[..., 0] ** 2 / 8  # noqa: E731
    potential = Potential(energy, event_shape=(2,), base=flow)
    assert potential.backbone is flow

    def model():
        pyro.sample("x", potential)

    x = draws(run_flow_mcmc(0, model=model, num_walkers=20, num_warmup=300, num_samples=300), "x")
    with torch.no_grad():
        exact = flow().sample((400_000,)).double()
    weights = torch.exp(-energy(exact))
    truth = (weights[:, None] * exact).sum(0) / weights.sum()
    truth_se = ((weights[:, None] ** 2 * (exact - truth) ** 2).sum(0).sqrt() / weights.sum()).numpy()  # SNIS
    truth = truth.numpy()
    for i in range(2):
        mcse = float(az.mcse(x[..., i], method="mean"))
        z = (x[..., i].mean() - truth[i]) / np.hypot(mcse, truth_se[i])
        assert abs(z) < 3, (i, x[..., i].mean(), truth[i], mcse, truth_se[i])
