"""FlowMCMC against known answers: moments and mode weights, within Monte-Carlo error."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from ebmppl.datasets import bimodal_pair, line_of_four
from ebmppl.diagnostics import mode_weight_zscores
from ebmppl.numpyro import WarmupSchedule
from tests.test_common.double_wells import deep_side_weight, double_wells_energy
from .npy_util import draws, run_flow_mcmc

LOCAL_ONLY = WarmupSchedule.default(500).replace(fit_iterations=())


def mcse_z(values, truth):
    """(mean - truth) / MCSE of the mean, values of shape (chains, draws)."""
    return (values.mean() - truth) / float(az.mcse(np.asarray(values), method="mean"))


def test_moments_of_a_correlated_gaussian():
    mean = jnp.array([1.0, -2.0])
    cov = jnp.array([[1.0, 1.8], [1.8, 4.0]])  # correlation 0.9

    def model():
        numpyro.sample("x", dist.MultivariateNormal(mean, cov))

    x = draws(run_flow_mcmc(0, model=model), "x")
    centred = x - np.asarray(mean)
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
    init = 0.5 * jax.random.normal(jax.random.key(1), (40, 2))
    x = draws(run_flow_mcmc(0, potential_fn=lambda x: target.energy(x, jnp), schedule=schedule,
                            init_params=init))
    z = mode_weight_zscores(target.assign(x), target.weights)
    assert bool(np.all(np.abs(z) <= 4)) == should_pass, z


@pytest.mark.parametrize("schedule, should_pass", [(None, True), (LOCAL_ONLY, False)],
                         ids=["flow", "mala-only-control"])
def test_mode_weights_all_chains_start_in_the_light_mode(schedule, should_pass):
    target = bimodal_pair(heavy=0.9, offset=2.5, scale=0.5)
    light = jnp.asarray(target.means[1])
    init = light + 0.5 * jax.random.normal(jax.random.key(1), (40, 2))
    x = draws(run_flow_mcmc(0, potential_fn=lambda x: target.energy(x, jnp), schedule=schedule,
                            init_params=init))
    z = mode_weight_zscores(target.assign(x), target.weights)
    assert bool(np.all(np.abs(z) <= 4)) == should_pass, z


@pytest.mark.slow  # a statistical run of ~1 minute: make test-slow (both backends alike)
def test_model_with_two_sites_and_positive_support():
    def model():
        numpyro.sample("scale", dist.LogNormal(0.0, 0.5))
        numpyro.sample("loc", dist.Normal(1.0, 2.0).expand([3]).to_event(1))

    mcmc = run_flow_mcmc(0, model=model, num_warmup=300, num_samples=300)
    scale, loc = draws(mcmc, "scale"), draws(mcmc, "loc")
    assert scale.shape == (40, 300) and loc.shape == (40, 300, 3)
    assert scale.min() > 0  # reported in the constrained space
    assert abs(mcse_z(scale, np.exp(0.125))) < 3  # E LogNormal(0, .5) = exp(.5^2 / 2)
    assert all(abs(mcse_z(loc[..., i], 1.0)) < 3 for i in range(3))
    idata = az.from_numpyro(mcmc)
    for name in ("global_accept_prob", "local_accept_prob", "acceptance_rate", "lp"):
        assert idata.sample_stats[name].shape == (40, 300)
    mcmc.print_summary()


@pytest.mark.slow  # two statistical runs, ~1 minute: make test-slow (both alike; Many-Well-32: standard_targets.py)
def test_independent_double_wells_keep_their_weights(monkeypatch):
    """Six double wells (Many-Well's, 12-D): every well's deep side within 4 MCSE of 0.8443. The
    whitening standardises each coordinate; the control, a rotation onto the principal components
    (the wells' equal variances make it an arbitrary blend of wells), misweighs them."""
    import ebmppl.numpyro.adaptation.flow_mcmc as adaptation
    from ebmppl.numpyro.flows import fit_whitening

    def deep_side_z():
        x = draws(run_flow_mcmc(0, potential_fn=lambda x: double_wells_energy(x, jnp), num_chains=16, num_warmup=400,
                                num_samples=200, init_params=2.0 * jax.random.normal(jax.random.key(1), (16, 12))))
        return [mcse_z((x[..., 2 * w] > 0).astype(float), deep_side_weight()) for w in range(6)]

    z = deep_side_z()
    assert max(abs(v) for v in z) < 4, z
    monkeypatch.setattr(adaptation, "fit_diagonal_whitening", fit_whitening)
    z_rotated = deep_side_z()
    assert max(abs(v) for v in z_rotated) > 4, z_rotated
