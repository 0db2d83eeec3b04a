"""NeuTraHMC's warm-up, composed with :func:`ebmppl.numpyro.kernels.neutra_core.step`.

After every warm-up iteration :func:`update` adapts the leapfrog step size
by dual averaging and stores the walkers' data-space positions in the window;
at the iterations of the :class:`~ebmppl.schedule.WarmupSchedule` it refits
the transport (reverse KL to the target, or forward KL on the window),
starting from the median and MAD scale of the window's later half
(:func:`window_whitening`); the walkers keep their data-space position
across the refit, except those stranded far out in the new latent space,
which start again from draws of the transport (:func:`redraw_stranded`);
and the trajectory length becomes a quarter period of the widest latent
direction (:func:`trajectory_length`). Until the first fit, trajectories are
capped at :data:`PREFIT_LEAPFROG` steps (:func:`leapfrog_cap`).

Example:
    >>> from ebmppl.numpyro.adaptation.neutra import stranded_threshold
    >>> round(stranded_threshold(10), 1)  # the 1 - 1e-6 quantile of chi-square with 10 degrees of freedom
    48.0

    One warm-up iteration composed with the core, by hand (a schedule without fits):

    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.adaptation import neutra
    >>> from ebmppl.numpyro.flows import identity_whitening, neutra_flow, partition_flow
    >>> from ebmppl.numpyro.kernels import neutra_core
    >>> from ebmppl.numpyro.moves import Transport
    >>> from ebmppl.schedule import WarmupSchedule
    >>> params, static = partition_flow(neutra_flow(jax.random.key(0), 2))
    >>> logdensity = lambda x: -0.5 * jnp.sum(x**2)
    >>> transport = Transport(params, identity_whitening(2))
    >>> state = neutra_core.init(jnp.ones((4, 2)), logdensity, transport, static, 0.5, 1.5)
    >>> schedule = WarmupSchedule(fit_iterations=(), window=2)
    >>> settings = neutra.Settings(10, 0.8, schedule, "reverse", 64, True)
    >>> adapt = neutra.init(state.position, None, schedule, 0.5)
    >>> int(neutra.leapfrog_cap(adapt, settings))
    64
    >>> state, info = neutra_core.step(jax.random.key(1), state, logdensity, static, 64)
    >>> state, adapt = neutra.update(jax.random.key(2), adapt, state, info, logdensity, static, settings)
    >>> int(adapt.i), adapt.window.shape
    (1, (2, 4, 2))
    >>> w = neutra.window_whitening(adapt.window, 0)  # median and MAD scale of the window's later half
    >>> w.loc.shape, bool(jnp.all(jnp.diag(w.matrix) > 0))
    ((2,), True)
    >>> float(neutra.trajectory_length(adapt.window, 0, transport, static)) > 0
    True
    >>> far = neutra_core.relocate(state, jnp.full((4, 2), 40.0), logdensity, static)  # |z|² = 3200
    >>> float(jnp.abs(neutra.redraw_stranded(jax.random.key(3), far, logdensity, static).position).max()) < 10
    True
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ebmppl.numpyro.adaptation import dual_averaging, window
from ebmppl.numpyro.flows import Whitening, fit_diagonal_whitening, fit_flow, fit_flow_reverse, restart_candidates
from ebmppl.numpyro.kernels.neutra_core import CoreInfo, CoreState, relocate, step_keys, value_and_grad
from ebmppl.numpyro.moves import LocalState, Transport, transport_maps
from ebmppl.schedule import WarmupSchedule

__all__ = ["AdaptState", "PREFIT_LEAPFROG", "Settings", "init", "leapfrog_cap", "redraw_stranded",
           "stranded_threshold", "trajectory_length", "update", "window_whitening"]

PREFIT_LEAPFROG = 32  # the cap on leapfrog steps before the first fit (see leapfrog_cap)


class Settings(NamedTuple):
    """What the warm-up needs to know of the run (hashable).

    Attributes:
        num_warmup: warm-up iterations.
        target_accept_prob: acceptance aimed at by step-size adaptation.
        schedule: when and how the transport is fitted.
        fit: ``"reverse"`` (KL to the target) or ``"forward"`` (KL from the chains' states).
        max_leapfrog: cap on the leapfrog steps of one trajectory.
        adapt_length: whether the trajectory length is adapted at each fit.
    """

    num_warmup: int
    target_accept_prob: float
    schedule: WarmupSchedule
    fit: str
    max_leapfrog: int
    adapt_length: bool


class AdaptState(NamedTuple):
    """Warm-up bookkeeping.

    Attributes:
        i: warm-up iterations done.
        dual_averaging: the dual-averaging state of ``log(step_size)``.
        window: shape ``(W, C, D)``, the last ``W`` iterations' data-space positions.
        fresh_params: initial parameters for fresh restarts, shape ``(num_fits, restarts, ...)`` per leaf.
        num_fits: fits done so far.
        fit_losses: shape ``(restarts + 1,)``, the last fit's candidate losses; NaN before the first fit.
    """

    i: jax.Array
    dual_averaging: tuple
    window: jax.Array
    fresh_params: Any
    num_fits: jax.Array
    fit_losses: jax.Array


def init(position: jax.Array, fresh_params: Any, schedule: WarmupSchedule, step_size) -> AdaptState:
    """Warm-up bookkeeping before the first iteration, for walkers at ``position`` ``(C, D)``."""
    return AdaptState(
        i=jnp.zeros((), jnp.int32),
        dual_averaging=dual_averaging.init(step_size),
        window=window.init(schedule.window, position),
        fresh_params=fresh_params,
        num_fits=jnp.zeros((), jnp.int32),
        fit_losses=jnp.full((schedule.fresh_restarts + 1,), jnp.nan),
    )


def leapfrog_cap(adapt: AdaptState, settings: Settings) -> jax.Array:
    """``max_leapfrog``, or :data:`PREFIT_LEAPFROG` while the first scheduled fit is still to come.

    Before it the walkers move in data space, where the trajectory length
    (set for a standardised latent space) can be many times the target's
    width; those iterations only have to bring the walkers in.
    """
    if not settings.schedule.fit_iterations:
        return jnp.asarray(settings.max_leapfrog)
    prefit = (adapt.num_fits == 0) & (adapt.i < settings.num_warmup)
    return jnp.where(prefit, min(settings.max_leapfrog, PREFIT_LEAPFROG), settings.max_leapfrog)


def update(key, adapt: AdaptState, state: CoreState, info: CoreInfo, logdensity: Callable, flow_static,
           settings: Settings) -> tuple[CoreState, AdaptState]:
    """After warm-up iteration ``adapt.i``: step size, window and, when scheduled, a transport fit.

    Args:
        key: the iteration's key (split by :func:`~ebmppl.numpyro.kernels.neutra_core.step_keys`).
        adapt: the :class:`AdaptState`.
        state, info: the core's state and report after the iteration.
        logdensity: the target's log density of one data-space point.
        flow_static: the static part of the flow.
        settings: the run's :class:`Settings`.
    """
    it = adapt.i
    da = dual_averaging.update(adapt.dual_averaging, info.accept_prob, settings.target_accept_prob)
    step_size = dual_averaging.next_step_size(da, it, settings.num_warmup)
    adapt = adapt._replace(i=it + 1, dual_averaging=da, window=window.update(adapt.window, it, state.position))
    state = state._replace(step_size=step_size.astype(state.step_size.dtype))
    if not settings.schedule.fit_iterations:
        return state, adapt
    is_fit = jnp.any(it == jnp.asarray(settings.schedule.fit_iterations))
    fit_key, redraw_key = jax.random.split(step_keys(key)[2])

    def refit(s: CoreState, a: AdaptState):
        transport, losses = _fit(fit_key, s, a, logdensity, flow_static, settings)
        s = relocate(s._replace(transport=transport), s.position, logdensity, flow_static)
        s = redraw_stranded(redraw_key, s, logdensity, flow_static)
        if settings.adapt_length:
            s = s._replace(trajectory_length=trajectory_length(a.window, it, s.transport, flow_static))
        # Step-size adaptation restarts: the latent geometry just changed.
        a = a._replace(dual_averaging=dual_averaging.init(s.step_size), num_fits=a.num_fits + 1, fit_losses=losses)
        return s, a

    return jax.lax.cond(is_fit, refit, lambda s, a: (s, a), state, adapt)


def stranded_threshold(dim: int) -> float:
    """``|z|²`` above which a walker is stranded: the ``1 - 10⁻⁶`` quantile of ``χ²_dim`` (Wilson-Hilferty)."""
    return dim * (1.0 - 2.0 / (9 * dim) + 4.753 * math.sqrt(2.0 / (9 * dim))) ** 3


def redraw_stranded(key, state: CoreState, logdensity: Callable, flow_static) -> CoreState:
    """Walkers far out in the latent tails (``|z|²`` beyond :func:`stranded_threshold`) start again
    from draws of the transport.

    A walker started at a wildly improbable point (in a funnel's neck, 30
    standard deviations out) can reject every proposal under a step size set by
    the ensemble; after a fit it lies far out in the latent space, and a fresh
    draw ``T(z)``, ``z ~ N(0, I)``, puts it where the transport has mass.
    """
    old = state.walkers
    fresh = jax.random.normal(key, old.position.shape, old.position.dtype)
    stranded = jnp.sum(old.position**2, -1) > stranded_threshold(old.position.shape[-1])
    stranded = stranded | ~jnp.isfinite(old.logdensity)
    latent = jnp.where(stranded[:, None], fresh, old.position)
    (value, aux), grad = value_and_grad(logdensity, state.transport, flow_static)(latent)
    replace = stranded & jnp.isfinite(value) & jnp.all(jnp.isfinite(grad), -1)
    walkers = jax.tree.map(
        lambda new, kept: jnp.where(replace.reshape(replace.shape + (1,) * (new.ndim - 1)), new, kept),
        LocalState(latent, value, grad, aux), old,
    )
    return state._replace(walkers=walkers)


def window_whitening(positions: jax.Array, it) -> Whitening:
    """The standardisation a fit starts from: the median and MAD scale of the later half of the window.

    The early iterations of the first window are the walkers' way in, and a
    walker stuck far out (one in eight on posteriordb's earnings) would
    make the variance many times the target's: the median and the MAD
    ignore both, and a fit started from a Gaussian that wide can diverge.

    Args:
        positions: the window ``(W, C, D)``.
        it: the warm-up iteration just done.
    """
    return fit_diagonal_whitening(window.recent(positions, it), robust=True)


def trajectory_length(positions: jax.Array, it, transport: Transport, flow_static) -> jax.Array:
    """A quarter period of HMC on the widest latent direction of the window: ``(π/2) σ_max``.

    Over the later half of the window (``positions``, ``(W, C, D)``, after
    warm-up iteration ``it``) and its points inside the latent ball of
    :func:`stranded_threshold` (a stuck walker's past is not the target's width).
    """
    _, inverse = transport_maps(transport, flow_static)
    latent = jax.vmap(inverse)(window.recent(positions, it))
    inside = jnp.all(jnp.isfinite(latent), -1) & (jnp.sum(latent**2, -1) <= stranded_threshold(latent.shape[-1]))
    weight = inside.astype(latent.dtype)
    count = jnp.sum(weight)
    latent = jnp.where(inside[:, None], latent, 0.0)
    mean = jnp.sum(latent * weight[:, None], 0) / jnp.maximum(count, 1.0)
    centred = (latent - mean) * weight[:, None]
    cov = centred.T @ centred / jnp.maximum(count - 1.0, 1.0)
    widest = jnp.sqrt(jnp.max(jnp.linalg.eigvalsh(cov)))
    widest = jnp.where(jnp.isfinite(widest) & (count >= 2), widest, 1.0)
    return jnp.asarray(0.5 * math.pi * jnp.clip(widest, 0.5, 10.0), positions.dtype)


def _fit(key, state: CoreState, adapt: AdaptState, logdensity, flow_static,
         settings: Settings) -> tuple[Transport, jax.Array]:
    schedule = settings.schedule
    whitening = window_whitening(adapt.window, adapt.i - 1)
    candidates = restart_candidates(state.transport.params, adapt.fresh_params, adapt.num_fits)
    budget = dict(num_steps=schedule.fit_steps, batch_size=schedule.batch_size, learning_rate=schedule.learning_rate)
    if settings.fit == "forward":
        points = adapt.window.reshape(-1, adapt.window.shape[-1])
        whitened = (points - whitening.loc) @ whitening.inverse.T
        params, losses = fit_flow(key, candidates, flow_static, whitened, **budget)
    else:
        params, losses = fit_flow_reverse(key, candidates, flow_static, whitening, logdensity, **budget)
    return Transport(params, whitening), losses
