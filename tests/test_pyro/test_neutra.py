"""NeuTraHMC (Pyro): exact identities of the transport, moments on known targets, its limits, bad input."""

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
import zuko
from pyro.infer import MCMC

from ebmppl.datasets import bimodal_pair
from ebmppl.diagnostics import mode_weight_zscores, to_arviz
from ebmppl.pyro import NeuTraHMC, Potential, WarmupSchedule
from ebmppl.pyro.flows import Whitening, base_maps, fit_diagonal_whitening, fit_whitening, identity_whitening, neutra_flow
from ebmppl.pyro.kernels import neutra_core
from ebmppl.pyro.adaptation import neutra as neutra_warmup
from ebmppl.pyro.moves import Transport, latent_logdensity
from ebmppl.pyro.kernels.target import Layout, potential_fn_target
from .pyro_util import draws, run_flow_mcmc, stats


def run_neutra(seed=0, *, initial_params=None, num_warmup=500, num_samples=500, model_args=(), **kernel_kwargs):
    """Run NeuTraHMC under Pyro's MCMC (one Pyro chain of walkers); returns the MCMC object."""
    pyro.set_rng_seed(seed)
    mcmc = MCMC(NeuTraHMC(**kernel_kwargs), num_samples=num_samples, warmup_steps=num_warmup,
                initial_params=initial_params, disable_progbar=True)
    mcmc.run(*model_args)
    return mcmc


NO_FITS = WarmupSchedule(fit_iterations=(), window=1)


def short_schedule(num_warmup, fit_steps):
    """The default schedule with fewer Adam steps per fit."""
    return NeuTraHMC.default_schedule(num_warmup).replace(fit_steps=fit_steps)


def mcse_z(values, truth):
    """(mean - truth) / MCSE of the mean, values of shape (walkers, draws)."""
    return (values.mean() - truth) / float(az.mcse(np.asarray(values), method="mean"))


def perturbed_neutra_flow(dim, seed=0, scale=0.1):
    """neutra_flow starts as the identity map: move every parameter off its initial value."""
    torch.manual_seed(seed)
    flow = neutra_flow(dim)
    with torch.no_grad():
        for param in flow.parameters():
            param.add_(scale * torch.randn_like(param))
    return flow


def quartic_energy(x):
    return 0.25 * (x**4).sum(-1) + 0.5 * x[..., 0] * x[..., 1]


def std_normal_logpdf(z):
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# --- 1. exact identities --------------------------------------------------------------------


def test_neutra_flow_inverse_of_forward_is_identity(float64):
    forward, inverse = base_maps(perturbed_neutra_flow(3))
    torch.manual_seed(1)
    z = 1.5 * torch.randn(32, 3)
    x, _ = forward(z)
    assert float((x.detach() - z).abs().max()) > 0.1  # not the identity
    torch.testing.assert_close(inverse(x), z, atol=1e-10, rtol=0)


def test_backbone_potential_is_the_energy_tilting_the_flow(float64):
    flow = perturbed_neutra_flow(3)
    potential = Potential(quartic_energy, event_shape=(3,), base=flow)
    assert potential.backbone is flow
    torch.manual_seed(2)
    x = torch.randn(16, 3)
    torch.testing.assert_close(potential.log_prob(x), -quartic_energy(x) + flow().log_prob(x), atol=1e-10, rtol=0)


def test_backbone_latent_logdensity_is_base_minus_energy(float64):
    """In the backbone's latent space: log ρ(z) - E(g(z)), the flow's density cancels exactly."""
    flow = perturbed_neutra_flow(3)
    potential = Potential(quartic_energy, event_shape=(3,), base=flow)
    fn = latent_logdensity(potential.log_prob, Transport(flow, identity_whitening(3, torch.float64)))
    torch.manual_seed(3)
    z = 1.5 * torch.randn(16, 3)
    value, x, _ = fn(z)
    g, _ = base_maps(flow)[0](z)
    torch.testing.assert_close(x, g, atol=1e-12, rtol=0)
    torch.testing.assert_close(value, std_normal_logpdf(z) - quartic_energy(g), atol=1e-8, rtol=0)


@pytest.mark.parametrize("fit_whitening_fn", [fit_diagonal_whitening, fit_whitening], ids=["diagonal", "pca"])
def test_latent_logdensity_is_target_plus_log_det_jacobian(float64, fit_whitening_fn):
    torch.manual_seed(4)
    points = torch.randn(200, 3) @ torch.tensor(
        [[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.3, 3.0]]) + torch.tensor([1.0, -2.0, 0.5])
    whitening = fit_whitening_fn(points)
    assert float(whitening.log_det) > 0.5  # not the identity
    flow = perturbed_neutra_flow(3, seed=5)

    def logdensity(x):
        return -quartic_energy(x)

    fn = latent_logdensity(logdensity, Transport(flow, whitening))
    torch.manual_seed(6)
    z = torch.randn(16, 3)
    value, x, x_value = fn(z)
    jacobians = torch.stack([torch.autograd.functional.jacobian(lambda zi: fn(zi[None])[1][0], zi) for zi in z])
    log_det = torch.linalg.slogdet(jacobians).logabsdet
    torch.testing.assert_close(x_value, logdensity(x), atol=1e-10, rtol=0)
    torch.testing.assert_close(value, logdensity(x) + log_det, atol=1e-8, rtol=0)


def test_kernel_samples_a_backbone_in_its_flow_latent_space():
    """The kernel finds the backbone of the only latent site and uses it, never refitted, as its transport
    (25 warm-up iterations: the default schedule would fit four times)."""
    flow = perturbed_neutra_flow(3)
    trainable = [p.requires_grad for p in flow.parameters()]

    def model():
        pyro.sample("x", Potential(quartic_energy, event_shape=(3,), base=flow))

    mcmc = run_neutra(model=model, num_walkers=4, num_warmup=25, num_samples=5)
    state = mcmc.kernel.state
    assert mcmc.kernel.num_fits == 0
    for name, value in flow.state_dict().items():  # the kernel's copy of the backbone, unchanged
        torch.testing.assert_close(state.transport.flow.state_dict()[name], value, atol=0, rtol=0)
    assert [p.requires_grad for p in flow.parameters()] == trainable  # the caller's flow is left as it was
    torch.testing.assert_close(state.transport.whitening.matrix, torch.eye(3), atol=0, rtol=0)
    torch.testing.assert_close(state.transport.whitening.loc, torch.zeros(3), atol=0, rtol=0)
    assert float((state.walkers.position - state.position).abs().max()) > 1e-2  # latent space is not data space
    torch.testing.assert_close(flow.from_base(state.walkers.position)[0], state.position, rtol=1e-4, atol=1e-4)
    assert draws(mcmc, "x").shape == (4, 5, 3)


# --- 2, 3. moments on known targets ------------------------------------------------------------


def test_funnel_moments():
    """Neal's funnel in 10-D (v ~ N(0, 3), x_i | v ~ N(0, exp(v/2))), default settings."""
    def model():
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        pyro.sample("x", dist.Normal(0.0, (v / 2).exp().unsqueeze(-1)).expand(v.shape + (9,)).to_event(1))

    v = draws(run_neutra(0, model=model, num_walkers=8, num_warmup=1000, num_samples=1000), "v")
    checks = {
        "mean": v.mean() / float(az.mcse(v, method="mean")),
        "sd": (v.std() - 3.0) / float(az.mcse(v, method="sd")),
        "rhat": float(az.rhat(v)),
    }
    assert abs(checks["mean"]) < 3 and abs(checks["sd"]) < 3 and checks["rhat"] <= 1.01, checks


SIGMA1, BEND = 3.0, 0.1  # banana: x1 ~ N(0, SIGMA1²), x2 = y + BEND (x1² - SIGMA1²), y ~ N(0, 1)


def banana_potential(params):
    x = params["x"]
    return 0.5 * (x[0] / SIGMA1) ** 2 + 0.5 * (x[1] - BEND * (x[0] ** 2 - SIGMA1**2)) ** 2


def test_banana_moments():
    """Means and variances in closed form: Var x2 = 1 + 2 BEND² SIGMA1⁴."""
    torch.manual_seed(1)
    init = {"x": torch.randn(16, 2)}
    x = draws(run_neutra(0, potential_fn=banana_potential, initial_params=init,
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
    light = torch.as_tensor(target.means[1], dtype=torch.float32)
    torch.manual_seed(1)
    init = {"x": light + 0.5 * torch.randn(40, 2)}
    potential = lambda p: target.energy(p["x"], torch)  # noqa: E731
    if kernel == "neutra":
        mcmc = run_neutra(0, potential_fn=potential, initial_params=init,
                          schedule=short_schedule(500, 300))
    else:
        mcmc = run_flow_mcmc(0, potential_fn=potential, initial_params=init)
    z = mode_weight_zscores(target.assign(draws(mcmc)), target.weights)
    assert bool(np.all(np.abs(z) <= 4)) == should_pass, z


# --- 5. bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("flow", [
    zuko.flows.NAF(features=2),
    dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1), [T.block_autoregressive(2)]),
], ids=["zuko-NAF", "pyro-BNAF"])
def test_flow_with_no_exact_inverse_is_refused(flow):
    with pytest.raises(ValueError, match="no exact inverse"):
        run_neutra(potential_fn=lambda p: (p["x"] ** 2).sum(), flow=flow, initial_params={"x": torch.zeros(4, 2)})


def test_energy_nan_everywhere_fails_at_initialisation():
    with pytest.raises(ValueError, match="NaN or infinite at every initial point"):
        run_neutra(potential_fn=lambda p: torch.nan * p["x"].sum(), initial_params={"x": torch.zeros(4, 2)})

    def model():
        pyro.sample("x", Potential(lambda x: torch.nan * x.sum(-1), event_shape=(2,)))

    with pytest.raises(ValueError, match="not finite at any initial point"):
        run_neutra(model=model, num_walkers=4)


def test_nan_region_is_rejected_and_counted():
    def potential(params):  # a standard normal, undefined where x[0] > 2
        x = params["x"]
        return torch.where(x[0] > 2.0, torch.nan, 0.5 * (x**2).sum())

    torch.manual_seed(1)
    init = {"x": torch.randn(8, 2).clamp(-1.0, 1.0)}
    mcmc = run_neutra(potential_fn=potential, initial_params=init, num_warmup=200, num_samples=200,
                      schedule=short_schedule(200, 100))
    x = draws(mcmc)
    assert np.isfinite(x).all() and x[..., 0].max() <= 2.0
    assert np.isfinite(stats(mcmc)["potential_energy"]).all()
    assert int(mcmc.kernel.num_nonfinite.sum()) > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(model=lambda: None, fit="sideways"), "fit must be 'forward' or 'reverse'"),
    (dict(model=lambda: None, potential_fn=lambda p: (p["x"] ** 2).sum()),
     "exactly one of `model` and `potential_fn`"),
], ids=["unknown-fit", "model-and-potential_fn"])
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuTraHMC(**kwargs)


def test_single_chain_is_refused():
    with pytest.raises(ValueError, match="num_walkers >= 2"):
        NeuTraHMC(potential_fn=lambda p: (p["x"] ** 2).sum(), num_walkers=1)
    with pytest.raises(ValueError, match="needs at least 2"):
        run_neutra(potential_fn=lambda p: (p["x"] ** 2).sum(), initial_params={"x": torch.zeros(1, 2)},
                   num_warmup=10, num_samples=10)


# --- 6. ArviZ -------------------------------------------------------------------------------


def test_arviz_sample_stats_and_constrained_posterior():
    def model():
        pyro.sample("scale", dist.LogNormal(0.0, 0.5))
        pyro.sample("loc", dist.Normal(1.0, 2.0).expand([2]).to_event(1))

    mcmc = run_neutra(0, model=model, num_walkers=4, num_warmup=100, num_samples=50,
                      schedule=NO_FITS)
    data = to_arviz(mcmc)
    for name in ("acceptance_rate", "lp", "diverging", "step_size", "n_steps"):
        assert data["sample_stats"][name].shape == (4, 50), name
    scale = np.asarray(data["posterior"]["scale"])
    assert scale.shape == (4, 50) and scale.min() > 0  # reported in the constrained space
    assert np.asarray(data["posterior"]["loc"]).shape == (4, 50, 2)


def funnel_potential(params):
    x = params["x"]
    v = x[0]
    return -(dist.Normal(0.0, 3.0).log_prob(v) + dist.Normal(0.0, (v / 2).exp()).log_prob(x[1:]).sum())


def test_stranded_walkers_are_redrawn_and_the_others_kept():
    """Exactly the walkers beyond the χ² quantile of the latent base are redrawn from the transport."""
    dim = 10
    target = potential_fn_target(funnel_potential, Layout(("x",), (torch.Size([dim]),)))
    torch.manual_seed(1)
    position = 0.5 * torch.randn(4, dim)
    position[0] = 20.0  # identity transport: latent = position, far beyond the quantile
    state = neutra_core.init(position, target, Transport(neutra_flow(dim), identity_whitening(dim)), 0.1, 1.0)
    assert float((state.walkers.position[0] ** 2).sum()) > neutra_warmup.stranded_threshold(dim)
    new = neutra_warmup.redraw_stranded(state, target)
    assert float((new.walkers.position[0] ** 2).sum()) < neutra_warmup.stranded_threshold(dim)
    assert torch.isfinite(new.walkers.logdensity[0])
    torch.testing.assert_close(new.position[1:], state.position[1:], rtol=0, atol=0)


def test_walker_stranded_at_a_wild_start_is_redrawn_at_a_fit():
    """Walkers started at 3 N(0, I) in the funnel: one lands 29 standard deviations out in the neck and
    rejects every proposal under the ensemble's step size until a fit redraws it (found by
    benchmarks/samplers.py, seed 0). Fits capped at 600 Adam steps: at 300, with the default's single
    (warm-started) candidate, the Pyro transport stays too rough there (one walker's acceptance 0.17)."""
    torch.manual_seed(1000)
    init = 3 * torch.randn(8, 10)
    init[0, 0], init[0, 6] = -2.8, 7.1
    mcmc = run_neutra(0, num_warmup=1000, num_samples=300, initial_params={"x": init},
                      potential_fn=funnel_potential, schedule=short_schedule(1000, 600))
    accept = mcmc.kernel.sample_stats[-1]["accept_prob"].mean(1).numpy()
    assert accept.min() > 0.3, accept


NARROW_LOC = torch.tensor([5.0, -3.0, 1.0])
NARROW_SCALE = torch.tensor([0.01, 0.02, 0.05])


def narrow_potential(params):
    return 0.5 * (((params["x"] - NARROW_LOC) / NARROW_SCALE) ** 2).sum(-1)


def stuck_walker_window(size, num_walkers=8, seed=0):
    """A warm-up window on the narrow target: the first half the walkers' way in from (-2, 2), the
    second half at the target, except walker 0, stuck at its start throughout (posteriordb's earnings)."""
    gen = torch.Generator().manual_seed(seed)
    start = 4.0 * torch.rand(num_walkers, 3, generator=gen) - 2.0
    half = size // 2
    steps = torch.linspace(0.0, 1.0, half)[:, None, None]
    way_in = start + steps * (NARROW_LOC - start)
    there = NARROW_LOC + NARROW_SCALE * torch.randn(size - half, num_walkers, 3, generator=gen)
    window = torch.cat([way_in, there])
    window[:, 0] = start[0]
    return window


def window_state(size):
    kernel = NeuTraHMC(potential_fn=narrow_potential, num_walkers=8)
    kernel.initial_params = {"x": NARROW_LOC + NARROW_SCALE * torch.randn(8, 3)}
    kernel.setup(200)
    adapt = kernel.adaptation
    size = adapt.window.shape[0]
    return kernel.state, adapt._replace(i=size, window=stuck_walker_window(size))


def test_fit_standardisation_ignores_the_way_in_and_a_stuck_walker():
    """A fit starts from the median and MAD scale of the window's later half: on a window whose first
    half is the walkers' way in and with one walker of eight stuck far out, they stay within 0.5 sd and
    30% of the target's (one point in eight out moves the median by 0.18 sd and the MAD scale by 17%;
    the median's standard error on 231 points is 0.08 sd). Control: the window's variance is off by
    more than 10 times."""
    _, adapt = window_state(200)
    whitening = neutra_warmup.window_whitening(adapt.window, adapt.i - 1)
    assert torch.all((whitening.loc - NARROW_LOC).abs() < 0.5 * NARROW_SCALE), whitening.loc
    torch.testing.assert_close(torch.diag(whitening.matrix), NARROW_SCALE, rtol=0.3, atol=0.0)
    control = fit_diagonal_whitening(adapt.window.reshape(-1, 3))
    assert torch.all(torch.diag(control.matrix) > 10 * NARROW_SCALE), torch.diag(control.matrix)


def test_trajectory_length_ignores_stranded_points():
    """With the target's own standardisation the latent window is N(0, I) but for the stuck walker
    (550 sd out) and the way in: the trajectory length is (pi/2) sigma_max of the rest, near pi/2,
    not the cap of 5 pi that the whole window gives (control)."""
    state, adapt = window_state(200)
    exact = Whitening(NARROW_LOC, torch.diag(NARROW_SCALE), torch.diag(1.0 / NARROW_SCALE), NARROW_SCALE.log().sum())
    length = neutra_warmup.trajectory_length(adapt.window, adapt.i - 1, Transport(state.transport.flow, exact))
    assert 0.5 * math.pi * 0.8 < length < 0.5 * math.pi * 1.4, length
    latent = (adapt.window.reshape(-1, 3) - NARROW_LOC) / NARROW_SCALE
    assert float(torch.linalg.eigvalsh(torch.cov(latent.T)).max().sqrt()) > 10.0


def prefit_num_steps(schedule, iterations=40):
    """num_steps of the first iterations of NeuTraHMC (warm-up 200) on the narrow target."""
    torch.manual_seed(4)
    kernel = NeuTraHMC(potential_fn=narrow_potential, num_walkers=8, schedule=schedule)
    params = {"x": NARROW_LOC + NARROW_SCALE * torch.randn(8, 3)}
    kernel.initial_params = params
    kernel.setup(200)
    steps = []
    for _ in range(iterations):
        params = kernel.sample(params)
        steps.append(kernel.info.num_steps)
    return np.array(steps)


def test_trajectories_before_the_first_fit_are_capped():
    """Before the first fit the walkers move in the target's coordinates, where the trajectory length
    set for a unit-scale latent space (pi/2) spans 30 to 150 widths of this target: trajectories are
    capped at PREFIT_LEAPFROG steps, and the cap binds. Control: with no fit scheduled (a fitted flow
    passed in, say) there is no first fit to wait for and trajectories run longer."""
    steps = prefit_num_steps(short_schedule(200, 200))
    assert steps.max() <= neutra_warmup.PREFIT_LEAPFROG and np.mean(steps == neutra_warmup.PREFIT_LEAPFROG) > 0.5, steps
    assert prefit_num_steps(NO_FITS).max() > neutra_warmup.PREFIT_LEAPFROG
