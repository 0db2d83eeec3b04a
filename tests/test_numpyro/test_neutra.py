"""NeuTraHMC: exact identities of the transport, moments on known targets, its limits, bad input."""

import math

import arviz as az
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flowjax.distributions import StandardNormal
from flowjax.flows import block_neural_autoregressive_flow
from numpyro.infer import MCMC

from ebmppl.datasets import bimodal_pair
from ebmppl.diagnostics import mode_weight_zscores, to_arviz
from ebmppl.numpyro import NeuTraHMC, Potential, WarmupSchedule
from ebmppl.numpyro.flows import Whitening, fit_diagonal_whitening, fit_whitening, identity_whitening, neutra_flow, partition_flow
from ebmppl.numpyro.adaptation import neutra as neutra_warmup
from ebmppl.numpyro.kernels import neutra_core
from ebmppl.numpyro.moves import Transport, latent_logdensity
from .npy_util import draws, run_flow_mcmc


def run_neutra(seed=0, *, num_chains=8, num_warmup=500, num_samples=500, init_params=None, **kernel_kwargs):
    """Run NeuTraHMC under NumPyro's MCMC (vectorized chains); returns the MCMC object."""
    mcmc = MCMC(NeuTraHMC(**kernel_kwargs), num_warmup=num_warmup, num_samples=num_samples,
                num_chains=num_chains, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(seed), init_params=init_params)
    return mcmc


NO_FITS = WarmupSchedule(fit_iterations=(), window=1)


def short_schedule(num_warmup, fit_steps):
    """The default schedule with fewer Adam steps per fit."""
    return NeuTraHMC.default_schedule(num_warmup).replace(fit_steps=fit_steps)


def mcse_z(values, truth):
    """(mean - truth) / MCSE of the mean, values of shape (chains, draws)."""
    return (values.mean() - truth) / float(az.mcse(np.asarray(values), method="mean"))


def perturbed_neutra_flow(dim, seed=0, scale=0.1):
    """neutra_flow starts as the identity map: move every trainable array off its initial value."""
    params, static = partition_flow(neutra_flow(jax.random.key(seed), dim))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    leaves = [leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    return eqx.combine(jax.tree.unflatten(treedef, leaves), static)


def quartic_energy(x):
    return 0.25 * jnp.sum(x**4, -1) + 0.5 * x[..., 0] * x[..., 1]


def std_normal_logpdf(z):
    return -0.5 * jnp.sum(z**2, -1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


@pytest.fixture
def float64():
    with jax.enable_x64(True):
        yield


# --- 1. exact identities --------------------------------------------------------------------


def test_neutra_flow_inverse_of_forward_is_identity(float64):
    flow = perturbed_neutra_flow(3)
    z = 1.5 * jax.random.normal(jax.random.key(1), (32, 3))
    x = jax.vmap(flow.bijection.transform)(z)
    assert float(jnp.abs(x - z).max()) > 0.1  # not the identity
    np.testing.assert_allclose(jax.vmap(flow.bijection.inverse)(x), z, atol=1e-10)


def test_backbone_potential_is_the_energy_tilting_the_flow(float64):
    flow = perturbed_neutra_flow(3)
    potential = Potential(quartic_energy, event_shape=(3,), base=flow)
    assert potential.backbone is flow
    x = jax.random.normal(jax.random.key(2), (16, 3))
    np.testing.assert_allclose(potential.log_prob(x), -quartic_energy(x) + flow.log_prob(x), atol=1e-10)


def test_backbone_latent_logdensity_is_base_minus_energy(float64):
    """In the backbone's latent space: log ρ(z) - E(g(z)), the flow's density cancels exactly."""
    flow = perturbed_neutra_flow(3)
    potential = Potential(quartic_energy, event_shape=(3,), base=flow)
    params, static = partition_flow(flow)
    fn = latent_logdensity(potential.log_prob, Transport(params, identity_whitening(3)), static)
    z = 1.5 * jax.random.normal(jax.random.key(3), (16, 3))
    value, (x, _) = jax.vmap(fn)(z)
    g = jax.vmap(flow.bijection.transform)(z)
    np.testing.assert_allclose(x, g, atol=1e-12)
    np.testing.assert_allclose(value, std_normal_logpdf(z) - quartic_energy(g), atol=1e-8)


@pytest.mark.parametrize("fit_whitening_fn", [fit_diagonal_whitening, fit_whitening], ids=["diagonal", "pca"])
def test_latent_logdensity_is_target_plus_log_det_jacobian(float64, fit_whitening_fn):
    points = jax.random.normal(jax.random.key(4), (200, 3)) @ jnp.array(
        [[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.3, 3.0]]) + jnp.array([1.0, -2.0, 0.5])
    whitening = fit_whitening_fn(points)
    assert float(whitening.log_det) > 0.5  # not the identity
    flow = perturbed_neutra_flow(3, seed=5)
    params, static = partition_flow(flow)

    def logdensity(x):
        return -quartic_energy(x)

    fn = latent_logdensity(logdensity, Transport(params, whitening), static)
    z = jax.random.normal(jax.random.key(6), (16, 3))
    value, (x, x_value) = jax.vmap(fn)(z)
    jacobians = jax.vmap(jax.jacfwd(lambda zi: fn(zi)[1][0]))(z)
    _, log_det = jnp.linalg.slogdet(jacobians)
    np.testing.assert_allclose(x_value, logdensity(x), atol=1e-10)
    np.testing.assert_allclose(value, logdensity(x) + log_det, atol=1e-8)


def test_kernel_samples_a_backbone_in_its_flow_latent_space():
    """The kernel finds the backbone of the only latent site and uses it, never refitted, as its transport
    (25 warm-up iterations: the default schedule would fit four times)."""
    flow = perturbed_neutra_flow(3)

    def model():
        numpyro.sample("x", Potential(quartic_energy, event_shape=(3,), base=flow))

    mcmc = run_neutra(model=model, num_chains=4, num_warmup=25, num_samples=5)
    state = mcmc.last_state.core
    assert int(mcmc.last_state.adapt.num_fits) == 0
    for used, given in zip(jax.tree.leaves(state.transport.params), jax.tree.leaves(partition_flow(flow)[0])):
        np.testing.assert_array_equal(used, given)
    np.testing.assert_array_equal(state.transport.whitening.matrix, jnp.eye(3))
    np.testing.assert_array_equal(state.transport.whitening.loc, jnp.zeros(3))
    assert float(jnp.abs(state.walkers.position - state.position).max()) > 1e-2  # latent space is not data space
    np.testing.assert_allclose(jax.vmap(flow.bijection.transform)(state.walkers.position), state.position,
                               rtol=1e-4, atol=1e-4)
    assert draws(mcmc, "x").shape == (4, 5, 3)


# --- 2, 3. moments on known targets ------------------------------------------------------------


def test_funnel_moments():
    """Neal's funnel in 10-D (v ~ N(0, 3), x_i | v ~ N(0, exp(v/2))), default settings."""
    def model():
        v = numpyro.sample("v", dist.Normal(0.0, 3.0))
        numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)).expand([9]).to_event(1))

    v = draws(run_neutra(0, model=model, num_chains=8, num_warmup=1000, num_samples=1000), "v")
    checks = {
        "mean": v.mean() / float(az.mcse(v, method="mean")),
        "sd": (v.std() - 3.0) / float(az.mcse(v, method="sd")),
        "rhat": float(az.rhat(v)),
    }
    assert abs(checks["mean"]) < 3 and abs(checks["sd"]) < 3 and checks["rhat"] <= 1.01, checks


SIGMA1, BEND = 3.0, 0.1  # banana: x1 ~ N(0, SIGMA1²), x2 = y + BEND (x1² - SIGMA1²), y ~ N(0, 1)


def banana_potential(x):
    return 0.5 * (x[0] / SIGMA1) ** 2 + 0.5 * (x[1] - BEND * (x[0] ** 2 - SIGMA1**2)) ** 2


def test_banana_moments():
    """Means and variances in closed form: Var x2 = 1 + 2 BEND² SIGMA1⁴."""
    init = jax.random.normal(jax.random.key(1), (16, 2))
    x = draws(run_neutra(0, potential_fn=banana_potential, init_params=init, num_chains=16,
                         schedule=short_schedule(500, 500)))
    checks = {
        "mean1": mcse_z(x[..., 0], 0.0), "mean2": mcse_z(x[..., 1], 0.0),
        "var1": mcse_z(x[..., 0] ** 2, SIGMA1**2), "var2": mcse_z(x[..., 1] ** 2, 1 + 2 * BEND**2 * SIGMA1**4),
    }
    assert all(abs(z) < 3 for z in checks.values()), checks


# --- 4. the documented limitation ------------------------------------------------------------


@pytest.mark.parametrize("kernel, should_pass", [("neutra", False), ("flow_mcmc", True)],
                         ids=["neutra-stuck-control", "flow-mcmc"])
def test_mode_weights_all_chains_start_in_the_light_mode(kernel, should_pass):
    """The documented limitation of neural transport: a flow fitted while the chains sit in
    one mode does not place the other, so NeuTraHMC's chains do not move between the modes
    and the weights come out wrong; FlowMCMC's global moves recover them from the same starts."""
    target = bimodal_pair(heavy=0.9, offset=2.5, scale=0.5)
    init = jnp.asarray(target.means[1]) + 0.5 * jax.random.normal(jax.random.key(1), (40, 2))
    potential = lambda x: target.energy(x, jnp)  # noqa: E731
    if kernel == "neutra":
        mcmc = run_neutra(0, potential_fn=potential, init_params=init, num_chains=40,
                          schedule=short_schedule(500, 300))
    else:
        mcmc = run_flow_mcmc(0, potential_fn=potential, init_params=init)
    z = mode_weight_zscores(target.assign(draws(mcmc)), target.weights)
    assert bool(np.all(np.abs(z) <= 4)) == should_pass, z


# --- 5. bad input ---------------------------------------------------------------------------


def test_flow_with_no_exact_inverse_is_refused():
    bnaf = block_neural_autoregressive_flow(jax.random.key(0), base_dist=StandardNormal((2,)))
    with pytest.raises(ValueError, match="no exact inverse"):
        run_neutra(potential_fn=lambda x: jnp.sum(x**2), flow=bnaf, num_chains=4,
                   init_params=jnp.zeros((4, 2)))


def test_energy_nan_everywhere_fails_at_initialisation():
    with pytest.raises(ValueError, match="NaN or infinite at every initial point"):
        run_neutra(potential_fn=lambda x: jnp.nan * jnp.sum(x), num_chains=4, init_params=jnp.zeros((4, 2)))

    def model():
        numpyro.sample("x", Potential(lambda x: jnp.nan * jnp.sum(x, -1), event_shape=(2,)))

    with pytest.raises(ValueError, match="not finite at any initial point"):
        run_neutra(model=model, num_chains=4)


def test_nan_region_is_rejected_and_counted():
    def potential(x):  # a standard normal, undefined where x[0] > 2
        return jnp.where(x[0] > 2.0, jnp.nan, 0.5 * jnp.sum(x**2))

    init = jax.random.normal(jax.random.key(1), (8, 2)).clip(-1.0, 1.0)
    mcmc = run_neutra(potential_fn=potential, init_params=init, num_chains=8, num_warmup=200, num_samples=200,
                      schedule=short_schedule(200, 100))
    x = draws(mcmc)
    assert np.isfinite(x).all() and x[..., 0].max() <= 2.0
    assert np.isfinite(np.asarray(mcmc.get_extra_fields()["potential_energy"])).all()
    assert int(mcmc.last_state.num_nonfinite.sum()) > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(model=lambda: None, fit="sideways"), "fit must be 'forward' or 'reverse'"),
    (dict(model=lambda: None, potential_fn=lambda x: jnp.sum(x**2)), "exactly one of `model` and `potential_fn`"),
], ids=["unknown-fit", "model-and-potential_fn"])
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuTraHMC(**kwargs)


def test_single_chain_is_refused():
    mcmc = MCMC(NeuTraHMC(potential_fn=lambda x: jnp.sum(x**2)), num_warmup=10, num_samples=10,
                num_chains=1, chain_method="vectorized", progress_bar=False)
    with pytest.raises(ValueError, match="ensemble kernel"):
        mcmc.run(jax.random.key(0), init_params=jnp.zeros((1, 2)))


# --- 6. ArviZ -------------------------------------------------------------------------------


def test_arviz_sample_stats_and_constrained_posterior():
    def model():
        numpyro.sample("scale", dist.LogNormal(0.0, 0.5))
        numpyro.sample("loc", dist.Normal(1.0, 2.0).expand([2]).to_event(1))

    mcmc = run_neutra(0, model=model, num_chains=4, num_warmup=100, num_samples=50,
                      schedule=NO_FITS)
    data = to_arviz(mcmc)
    for name in ("acceptance_rate", "lp", "diverging", "step_size", "n_steps"):
        assert data["sample_stats"][name].shape == (4, 50), name
    scale = np.asarray(data["posterior"]["scale"])
    assert scale.shape == (4, 50) and scale.min() > 0  # reported in the constrained space
    assert np.asarray(data["posterior"]["loc"]).shape == (4, 50, 2)


def funnel_potential(x):
    v = x[0]
    return -(dist.Normal(0.0, 3.0).log_prob(v) + dist.Normal(0.0, jnp.exp(v / 2)).log_prob(x[1:]).sum())


def test_stranded_walkers_are_redrawn_and_the_others_kept():
    """Exactly the walkers beyond the χ² quantile of the latent base are redrawn from the transport."""
    dim = 10
    flow = neutra_flow(jax.random.key(0), dim)
    params, static = partition_flow(flow)
    logdensity = lambda x: -funnel_potential(x)  # noqa: E731
    position = 0.5 * jax.random.normal(jax.random.key(1), (4, dim))
    position = position.at[0].set(20.0)  # identity transport: latent = position, far beyond the quantile
    state = neutra_core.init(position, logdensity, Transport(params, identity_whitening(dim)), static, 0.1, 1.0)
    assert float(jnp.sum(state.walkers.position[0] ** 2)) > neutra_warmup.stranded_threshold(dim)
    new = neutra_warmup.redraw_stranded(jax.random.key(2), state, logdensity, static)
    assert float(jnp.sum(new.walkers.position[0] ** 2)) < neutra_warmup.stranded_threshold(dim)
    assert np.isfinite(float(new.walkers.logdensity[0]))
    np.testing.assert_array_equal(np.asarray(new.position[1:]), np.asarray(state.position[1:]))


def test_walker_stranded_at_a_wild_start_is_redrawn_at_a_fit():
    """Chains started at 3 N(0, I) in the funnel: one lands 29 standard deviations out in the neck and
    rejects every proposal under the ensemble's step size until a fit redraws it (found by
    benchmarks/samplers.py, seed 0). Fits capped at 600 Adam steps: at 300, with the default's single
    (warm-started) candidate, the Pyro transport stays too rough there (one walker's acceptance 0.17)."""
    init = 3 * jax.random.normal(jax.random.key(1000), (40, 10))[:8]
    mcmc = run_neutra(0, num_warmup=1000, num_samples=300, init_params=init, potential_fn=funnel_potential,
                      schedule=short_schedule(1000, 600))
    accept = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["accept_prob"]).mean(1)
    assert accept.min() > 0.3, accept


NARROW_LOC = np.array([5.0, -3.0, 1.0])
NARROW_SCALE = np.array([0.01, 0.02, 0.05])


def narrow_potential(x):
    return 0.5 * jnp.sum(((x - NARROW_LOC) / NARROW_SCALE) ** 2)


def stuck_walker_window(size, num_walkers=8, seed=0):
    """A warm-up window on the narrow target: the first half the walkers' way in from (-2, 2), the
    second half at the target, except walker 0, stuck at its start throughout (posteriordb's earnings)."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(-2.0, 2.0, (num_walkers, 3))
    half = size // 2
    steps = np.linspace(0.0, 1.0, half)[:, None, None]
    way_in = start + steps * (NARROW_LOC - start)
    there = NARROW_LOC + NARROW_SCALE * rng.standard_normal((size - half, num_walkers, 3))
    window = np.concatenate([way_in, there])
    window[:, 0] = start[0]
    return jnp.asarray(window, jnp.float32)


def window_state():
    """The warm-up state after a full window (``i`` iterations done) holding :func:`stuck_walker_window`."""
    init = jnp.asarray(NARROW_LOC + NARROW_SCALE * np.random.default_rng(1).standard_normal((8, 3)), jnp.float32)
    adapt = NeuTraHMC(potential_fn=narrow_potential).init(jax.random.split(jax.random.key(0), 8), 200, init_params=init).adapt
    size = adapt.window.shape[0]
    return adapt._replace(i=jnp.asarray(size, jnp.int32), window=stuck_walker_window(size))


def test_fit_standardisation_ignores_the_way_in_and_a_stuck_walker():
    """A fit starts from the median and MAD scale of the window's later half: on a window whose first
    half is the walkers' way in and with one walker of eight stuck far out, they stay within 0.5 sd and
    30% of the target's (one point in eight out moves the median by 0.18 sd and the MAD scale by 17%;
    the median's standard error on 231 points is 0.08 sd). Control: the window's variance is off by
    more than 10 times."""
    state = window_state()
    whitening = neutra_warmup.window_whitening(state.window, state.i - 1)
    assert np.all(np.abs(np.asarray(whitening.loc) - NARROW_LOC) < 0.5 * NARROW_SCALE), whitening.loc
    np.testing.assert_allclose(np.diag(np.asarray(whitening.matrix)), NARROW_SCALE, rtol=0.3)
    control = fit_diagonal_whitening(state.window.reshape(-1, 3))
    assert np.all(np.diag(np.asarray(control.matrix)) > 10 * NARROW_SCALE), control.matrix


def test_trajectory_length_ignores_stranded_points():
    """With the target's own standardisation the latent window is N(0, I) but for the stuck walker
    (550 sd out) and the way in: the trajectory length is (pi/2) sigma_max of the rest, near pi/2,
    not the cap of 5 pi that the whole window gives (control)."""
    state = window_state()
    scale = jnp.asarray(NARROW_SCALE, jnp.float32)
    exact = Whitening(jnp.asarray(NARROW_LOC, jnp.float32), jnp.diag(scale), jnp.diag(1.0 / scale), jnp.sum(jnp.log(scale)))
    params, static = partition_flow(neutra_flow(jax.random.key(2), 3))
    length = float(neutra_warmup.trajectory_length(state.window, state.i - 1, Transport(params, exact), static))
    assert 0.5 * math.pi * 0.8 < length < 0.5 * math.pi * 1.4, length
    latent = (np.asarray(state.window).reshape(-1, 3) - NARROW_LOC) / NARROW_SCALE
    assert np.sqrt(np.linalg.eigvalsh(np.cov(latent.T)).max()) > 10.0


def prefit_num_steps(schedule, iterations=40):
    """num_steps of the first iterations of NeuTraHMC (warm-up 200) on the narrow target."""
    init = jnp.asarray(NARROW_LOC + NARROW_SCALE * np.random.default_rng(4).standard_normal((8, 3)), jnp.float32)
    mcmc = MCMC(NeuTraHMC(potential_fn=narrow_potential, schedule=schedule), num_warmup=200, num_samples=1,
                num_chains=8, chain_method="vectorized", progress_bar=False)
    mcmc.warmup(jax.random.key(4), init_params=init, collect_warmup=True, extra_fields=("num_steps",))
    return np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])[0, :iterations]


def test_trajectories_before_the_first_fit_are_capped():
    """Before the first fit the walkers move in the target's coordinates, where the trajectory length
    set for a unit-scale latent space (pi/2) spans 30 to 150 widths of this target: trajectories are
    capped at PREFIT_LEAPFROG steps, and the cap binds. Control: with no fit scheduled (a fitted flow
    passed in, say) there is no first fit to wait for and trajectories run longer."""
    steps = prefit_num_steps(short_schedule(200, 200))
    assert steps.max() <= neutra_warmup.PREFIT_LEAPFROG and np.mean(steps == neutra_warmup.PREFIT_LEAPFROG) > 0.5, steps
    assert prefit_num_steps(NO_FITS).max() > neutra_warmup.PREFIT_LEAPFROG
