"""FlowMCMC (Pyro) against known answers: moments and mode weights, within Monte-Carlo error."""

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from ebmppl.datasets import bimodal_pair, line_of_four
from ebmppl.diagnostics import mode_weight_zscores, to_arviz
from ebmppl.pyro import WarmupSchedule
from tests.test_common.double_wells import deep_side_weight, double_wells_energy
from .pyro_util import draws, run_flow_mcmc

LOCAL_ONLY = WarmupSchedule.default(500).replace(fit_iterations=())


def mcse_z(values, truth):
    """(mean - truth) / MCSE of the mean, values of shape (walkers, draws)."""
    return (values.mean() - truth) / float(az.mcse(np.asarray(values), method="mean"))


def test_moments_of_a_correlated_gaussian():
    mean = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[1.0, 1.8], [1.8, 4.0]])  # correlation 0.9

    def model():
        pyro.sample("x", dist.MultivariateNormal(mean, cov))

    x = draws(run_flow_mcmc(0, model=model))
    centred = x - mean.numpy()
    checks = {
        "mean0": mcse_z(x[..., 0], 1.0), "mean1": mcse_z(x[..., 1], -2.0),
        "var0": mcse_z(centred[..., 0] ** 2, 1.0), "var1": mcse_z(centred[..., 1] ** 2, 4.0),
        "cov": mcse_z(centred[..., 0] * centred[..., 1], 1.8),
    }
    assert all(abs(z) < 3 for z in checks.values()), checks


@pytest.mark.parametrize("schedule, should_pass", [(None, True), (LOCAL_ONLY, False)],
                         ids=["flow", "mala-only-control"])
def test_mode_weights_line_of_four(schedule, should_pass):
    target = line_of_four()  # modes at x = -3, -1, 1, 3, weights .1/.2/.3/.4
    torch.manual_seed(1)
    init = 0.5 * torch.randn(40, 2)
    x = draws(run_flow_mcmc(0, potential_fn=lambda p: target.energy(p["x"], torch),
                            schedule=schedule, initial_params={"x": init}))
    z = mode_weight_zscores(target.assign(x), target.weights)
    assert bool(np.all(np.abs(z) <= 4)) == should_pass, z


@pytest.mark.parametrize("schedule, should_pass", [(None, True), (LOCAL_ONLY, False)],
                         ids=["flow", "mala-only-control"])
def test_mode_weights_all_walkers_start_in_the_light_mode(schedule, should_pass):
    target = bimodal_pair(heavy=0.9, offset=2.5, scale=0.5)
    light = torch.as_tensor(target.means[1], dtype=torch.float32)
    torch.manual_seed(1)
    init = light + 0.5 * torch.randn(40, 2)
    x = draws(run_flow_mcmc(0, potential_fn=lambda p: target.energy(p["x"], torch),
                            schedule=schedule, initial_params={"x": init}))
    z = mode_weight_zscores(target.assign(x), target.weights)
    assert bool(np.all(np.abs(z) <= 4)) == should_pass, z


@pytest.mark.slow  # a statistical run of ~1 minute: make test-slow (both backends alike)
def test_model_with_two_sites_and_positive_support():
    def model():
        pyro.sample("scale", dist.LogNormal(0.0, 0.5))
        pyro.sample("loc", dist.Normal(1.0, 2.0).expand([3]).to_event(1))

    mcmc = run_flow_mcmc(0, model=model, num_warmup=300, num_samples=300)
    scale, loc = draws(mcmc, "scale"), draws(mcmc, "loc")
    assert scale.shape == (40, 300) and loc.shape == (40, 300, 3)
    assert scale.min() > 0  # reported in the constrained space
    assert abs(mcse_z(scale, np.exp(0.125))) < 3  # E LogNormal(0, .5) = exp(.5^2 / 2)
    assert all(abs(mcse_z(loc[..., i], 1.0)) < 3 for i in range(3))
    data = to_arviz(mcmc)
    for name in ("global_acceptance_rate", "local_acceptance_rate", "acceptance_rate", "lp"):
        assert data["sample_stats"][name].shape == (40, 300)
    mcmc.summary()


def test_model_with_a_plate_over_data():
    # y_i ~ N(mu, 1), mu ~ N(0, 10): posterior N(sum y / (n + 1/100), 1 / (n + 1/100))
    y = torch.tensor([0.3, 1.2, 2.1, 0.7, 1.5])

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    mu = draws(run_flow_mcmc(0, model=model, model_args=(y,), num_warmup=300, num_samples=300), "mu")
    precision = len(y) + 0.01
    assert abs(mcse_z(mu, float(y.sum()) / precision)) < 3
    assert abs(mcse_z((mu - float(y.sum()) / precision) ** 2, 1 / precision)) < 3


@pytest.mark.slow  # two statistical runs, ~1 minute: make test-slow (both alike; Many-Well-32: standard_targets.py)
def test_independent_double_wells_keep_their_weights(monkeypatch):
    """Six double wells (Many-Well's, 12-D): every well's deep side within 4 MCSE of 0.8443. The
    whitening standardises each coordinate; the control, a rotation onto the principal components
    (the wells' equal variances make it an arbitrary blend of wells), misweighs them."""
    import ebmppl.pyro.adaptation.flow_mcmc as adaptation
    from ebmppl.pyro.flows import fit_whitening

    def deep_side_z():
        start = 2.0 * torch.randn(16, 12, generator=torch.Generator().manual_seed(1))
        x = draws(run_flow_mcmc(0, potential_fn=lambda p: double_wells_energy(p["x"], torch), num_warmup=400,
                                num_samples=200, initial_params={"x": start}))
        return [mcse_z((x[..., 2 * w] > 0).astype(float), deep_side_weight()) for w in range(6)]

    z = deep_side_z()
    assert max(abs(v) for v in z) < 4, z
    monkeypatch.setattr(adaptation, "fit_diagonal_whitening", fit_whitening)
    z_rotated = deep_side_z()
    assert max(abs(v) for v in z_rotated) > 4, z_rotated
