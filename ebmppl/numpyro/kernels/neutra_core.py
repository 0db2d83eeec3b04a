"""Functional core of neural-transport HMC on a batch of walkers.

The walkers live in the latent space of a transport ``x = T(z) = loc + M g(z)``
(``g`` a flow's bijection, ``(loc, M)`` a whitening fitted to the chains) and
move by HMC on the latent log density ``log π(T(z)) + log|det J_T(z)|``,
which is close to a standard normal once the flow fits. :func:`init` builds
the state; :func:`step` runs one iteration: an HMC move with a jittered
number of leapfrog steps, then, during warm-up, step-size adaptation,
storage of the walkers' data-space states and, at the scheduled iterations,
a refit of the transport (reverse KL to the target, or forward KL on the
stored states) followed by a new trajectory length; walkers stranded far
out in the new latent space start again from draws of the transport; the
others keep their data-space position across a refit.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.flows import identity_whitening, neutra_flow, partition_flow
    >>> from ebmppl.numpyro.moves.transport import Transport, latent_logdensity
    >>> params, static = partition_flow(neutra_flow(jax.random.key(0), 2))
    >>> fn = latent_logdensity(lambda x: -0.5 * jnp.sum(x**2), Transport(params, identity_whitening(2)), static)
    >>> float(fn(jnp.ones(2))[0])  # a fresh flow is the identity: the target itself
    -1.0
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ebmppl.numpyro.flows import Whitening, fit_diagonal_whitening, fit_flow, fit_flow_reverse
from ebmppl.numpyro.kernels.core import AdaptState, _da_start, _identity, adapt_step_size, init_adapt
from ebmppl.numpyro.moves.transport import Transport, latent_logdensity, transport_maps
from ebmppl.schedule import WarmupSchedule

__all__ = ["Config", "CoreState", "init", "relocate", "step", "stranded_threshold"]

PREFIT_LEAPFROG = 32  # the cap on leapfrog steps before the first fit (see _leapfrog_cap)
DIVERGENCE_THRESHOLD = 1000.0  # an energy error above this ends a trajectory as divergent


class Config(NamedTuple):
    """Static settings of one run (hashable; changes recompile).

    Attributes:
        num_warmup: warm-up iterations.
        target_accept_prob: acceptance aimed at by step-size adaptation.
        schedule: when and how the transport is fitted.
        fit: ``"reverse"`` (KL to the target) or ``"forward"`` (KL from the chains' states).
        max_leapfrog: cap on the leapfrog steps of one trajectory.
        trajectory_length: fixed trajectory length, or ``None`` to adapt it.
    """

    num_warmup: int
    target_accept_prob: float
    schedule: WarmupSchedule
    fit: str
    max_leapfrog: int
    trajectory_length: float | None


class CoreState(NamedTuple):
    """Walkers and everything the next iteration needs.

    Attributes:
        i: iterations done.
        latent: shape ``(C, D)``, the walkers in the latent space.
        position: shape ``(C, D)``, ``T(latent)``, the walkers in data space.
        logdensity: shape ``(C,)``, the target's log density at ``position``.
        latent_logdensity, latent_grad: the latent log density and its gradient at ``latent``.
        step_size: shape ``(C,)``, the leapfrog step size (equal for all walkers).
        trajectory_length: the mean trajectory length (a scalar).
        num_steps: leapfrog steps of the last trajectory (a scalar).
        accept_prob: shape ``(C,)``, acceptance probability of the last move.
        diverging: shape ``(C,)``, whether the last trajectory diverged.
        num_nonfinite: shape ``(C,)``, running count of proposals rejected
            because the target's log density or gradient was not finite there.
        transport: the :class:`Transport`.
        adapt: the :class:`~ebmppl.numpyro.kernels.core.AdaptState` (the window holds
            data-space positions).
    """

    i: jax.Array
    latent: jax.Array
    position: jax.Array
    logdensity: jax.Array
    latent_logdensity: jax.Array
    latent_grad: jax.Array
    step_size: jax.Array
    trajectory_length: jax.Array
    num_steps: jax.Array
    accept_prob: jax.Array
    diverging: jax.Array
    num_nonfinite: jax.Array
    transport: Transport
    adapt: AdaptState


def _value_and_grad(logdensity, transport, flow_static):
    fn = jax.value_and_grad(latent_logdensity(logdensity, transport, flow_static), has_aux=True)
    return jax.vmap(fn)


def init(
    position: jax.Array,
    logdensity: Callable,
    flow_params: Any,
    flow_static,
    fresh_params: Any,
    config: Config,
    step_size: float,
) -> CoreState:
    """The state of walkers at data-space ``position`` (shape ``(C, D)``), under the identity standardisation."""
    num_walkers, dim = position.shape
    adapt = init_adapt(position, fresh_params, config.schedule, step_size)
    transport = Transport(flow_params, _identity(dim, position.dtype))
    length = math.pi / 2 if config.trajectory_length is None else config.trajectory_length
    zeros = jnp.zeros(num_walkers, position.dtype)
    state = CoreState(
        i=jnp.zeros((), jnp.int32),
        latent=position,
        position=position,
        logdensity=zeros,
        latent_logdensity=zeros,
        latent_grad=jnp.zeros_like(position),
        step_size=jnp.full(num_walkers, step_size, position.dtype),
        trajectory_length=jnp.asarray(length, position.dtype),
        num_steps=jnp.zeros((), jnp.int32),
        accept_prob=zeros,
        diverging=jnp.zeros(num_walkers, bool),
        num_nonfinite=jnp.zeros(num_walkers, jnp.int32),
        transport=transport,
        adapt=adapt,
    )
    return relocate(state, position, logdensity, flow_static)


def relocate(state: CoreState, position: jax.Array, logdensity: Callable, flow_static) -> CoreState:
    """Put the walkers at data-space ``position`` under the state's transport."""
    _, inverse = transport_maps(state.transport, flow_static)
    latent = jax.vmap(inverse)(position)
    (value, (x, x_value)), grad = _value_and_grad(logdensity, state.transport, flow_static)(latent)
    return state._replace(
        latent=latent, position=x, logdensity=x_value, latent_logdensity=value, latent_grad=grad
    )


def _hmc(key, state: CoreState, value_and_grad, num_steps):
    """One HMC move of every walker with ``num_steps`` leapfrog steps (traced)."""
    momentum_key, accept_key = jax.random.split(key)
    eps = state.step_size[:, None]
    p0 = jax.random.normal(momentum_key, state.latent.shape, state.latent.dtype)

    def leapfrog(_, carry):
        z, value, x, x_value, grad, p = carry
        p = p + 0.5 * eps * grad
        z = z + eps * p
        (value, (x, x_value)), grad = value_and_grad(z)
        p = p + 0.5 * eps * grad
        return z, value, x, x_value, grad, p

    start = (state.latent, state.latent_logdensity, state.position, state.logdensity, state.latent_grad, p0)
    z, value, x, x_value, grad, p = jax.lax.fori_loop(0, num_steps, leapfrog, start)
    energy_error = (0.5 * jnp.sum(p**2, -1) - value) - (0.5 * jnp.sum(p0**2, -1) - state.latent_logdensity)
    finite = jnp.isfinite(energy_error) & jnp.all(jnp.isfinite(grad), -1)
    diverging = ~finite | (energy_error > DIVERGENCE_THRESHOLD)
    log_ratio = jnp.where(finite, -energy_error, -jnp.inf)
    accept = jnp.log(jax.random.uniform(accept_key, log_ratio.shape)) < log_ratio

    def pick(new, old):
        return jnp.where(accept.reshape(accept.shape + (1,) * (new.ndim - 1)), new, old)

    moved = state._replace(
        latent=pick(z, state.latent),
        position=pick(x, state.position),
        logdensity=pick(x_value, state.logdensity),
        latent_logdensity=pick(value, state.latent_logdensity),
        latent_grad=pick(grad, state.latent_grad),
    )
    return moved, jnp.exp(jnp.minimum(log_ratio, 0.0)), diverging, (~finite).astype(jnp.int32)


def step(key: jax.Array, state: CoreState, logdensity: Callable, flow_static, config: Config) -> CoreState:
    """One iteration of neural-transport HMC (see the module docstring).

    Args:
        key: JAX key.
        state: the current :class:`CoreState`.
        logdensity: the target's log density of one data-space point.
        flow_static: the static part of the flow.
        config: static settings.

    Returns:
        The next :class:`CoreState`.
    """
    jitter_key, hmc_key, fit_key = jax.random.split(key, 3)
    # Jittered trajectory length (uniform on [0.5, 1.5] of the mean) against periodic orbits.
    length = state.trajectory_length * jax.random.uniform(jitter_key, (), minval=0.5, maxval=1.5)
    num_steps = jnp.clip(jnp.ceil(length / state.step_size[0]), 1, _leapfrog_cap(state, config)).astype(jnp.int32)
    value_and_grad = _value_and_grad(logdensity, state.transport, flow_static)
    moved, accept_prob, diverging, nonfinite = _hmc(hmc_key, state, value_and_grad, num_steps)
    state = moved._replace(
        i=state.i + 1,
        num_steps=num_steps,
        accept_prob=accept_prob,
        diverging=diverging,
        num_nonfinite=state.num_nonfinite + nonfinite,
    )
    if config.num_warmup == 0:
        return state
    return jax.lax.cond(
        state.i <= config.num_warmup,
        lambda s: _adapt(fit_key, s, logdensity, flow_static, config),
        lambda s: s,
        state,
    )


def _leapfrog_cap(state: CoreState, config: Config) -> jax.Array:
    """``config.max_leapfrog``, or :data:`PREFIT_LEAPFROG` while the first scheduled fit is still to come.

    Before it the walkers move in data space, where the trajectory length
    (set for a standardised latent space) can be many times the target's
    width; those iterations only have to bring the walkers in.
    """
    if not config.schedule.fit_iterations:
        return jnp.asarray(config.max_leapfrog)
    prefit = (state.adapt.num_fits == 0) & (state.i < config.num_warmup)
    return jnp.where(prefit, min(config.max_leapfrog, PREFIT_LEAPFROG), config.max_leapfrog)


def _adapt(key, state: CoreState, logdensity, flow_static, config: Config) -> CoreState:
    """Warm-up only: step size, training window, scheduled transport fits."""
    it = state.i - 1  # the iteration just done
    step_size, adapt = adapt_step_size(state.adapt, state.step_size, state.position, state.accept_prob, it, config)
    state = state._replace(step_size=step_size, adapt=adapt)
    schedule = config.schedule
    if not schedule.fit_iterations:
        return state
    is_fit = jnp.any(it == jnp.asarray(schedule.fit_iterations))

    fit_key, redraw_key = jax.random.split(key)

    def do_fit(s: CoreState) -> CoreState:
        transport, losses = _fit(fit_key, s, logdensity, flow_static, config)
        s = relocate(s._replace(transport=transport), s.position, logdensity, flow_static)
        s = _redraw_stranded(redraw_key, s, logdensity, flow_static)
        length = s.trajectory_length
        if config.trajectory_length is None:
            length = _trajectory_length(s, flow_static)
        adapt = s.adapt._replace(
            # Step-size adaptation restarts: the latent geometry just changed.
            dual_averaging=_da_start(s.step_size[0]),
            num_fits=s.adapt.num_fits + 1,
            fit_losses=losses,
        )
        return s._replace(adapt=adapt, trajectory_length=length)

    return jax.lax.cond(is_fit, do_fit, lambda s: s, state)


def stranded_threshold(dim: int) -> float:
    """``|z|²`` above which a walker is stranded: the ``1 - 10⁻⁶`` quantile of ``χ²_dim`` (Wilson-Hilferty)."""
    return dim * (1.0 - 2.0 / (9 * dim) + 4.753 * math.sqrt(2.0 / (9 * dim))) ** 3


def _redraw_stranded(key, state: CoreState, logdensity, flow_static) -> CoreState:
    """Warm-up only: walkers far out in the latent tails (``|z|²`` beyond :func:`stranded_threshold`)
    start again from draws of the fitted transport.

    A walker started at a wildly improbable point (in a funnel's neck, 30
    standard deviations out) can reject every proposal under a step size set by
    the ensemble; after a fit it lies far out in the latent space, and a fresh
    draw ``T(z)``, ``z ~ N(0, I)``, puts it where the transport has mass.
    """
    fresh = jax.random.normal(key, state.latent.shape, state.latent.dtype)
    stranded = jnp.sum(state.latent**2, -1) > stranded_threshold(state.latent.shape[-1])
    stranded = stranded | ~jnp.isfinite(state.latent_logdensity)
    latent = jnp.where(stranded[:, None], fresh, state.latent)
    (value, (x, x_value)), grad = _value_and_grad(logdensity, state.transport, flow_static)(latent)
    replace = stranded & jnp.isfinite(value) & jnp.all(jnp.isfinite(grad), -1)

    def pick(new, old):
        return jnp.where(replace.reshape(replace.shape + (1,) * (new.ndim - 1)), new, old)

    return state._replace(
        latent=pick(latent, state.latent),
        position=pick(x, state.position),
        logdensity=pick(x_value, state.logdensity),
        latent_logdensity=pick(value, state.latent_logdensity),
        latent_grad=pick(grad, state.latent_grad),
    )


def _recent_window(state: CoreState) -> jax.Array:
    """The later half of the window (the iterations after the one of the fit, ``it``, minus ``W / 2``), flattened."""
    window = state.adapt.window
    size = window.shape[0]
    rows = (state.i - 1 - jnp.arange((size + 1) // 2)) % size
    return window[rows].reshape(-1, window.shape[-1])


def _window_whitening(state: CoreState) -> Whitening:
    """The standardisation a fit starts from: the median and MAD scale of the later half of the window.

    The early iterations of the first window are the walkers' way in, and a
    walker stuck far out (one in eight on posteriordb's earnings) would
    make the variance many times the target's: the median and the MAD
    ignore both, and a fit started from a Gaussian that wide can diverge.
    """
    return fit_diagonal_whitening(_recent_window(state), robust=True)


def _trajectory_length(state: CoreState, flow_static) -> jax.Array:
    """A quarter period of HMC on the widest latent direction of the window: ``(π/2) σ_max``.

    Over the later half of the window and its points inside the latent
    ball of :func:`stranded_threshold` (a stuck walker's past is not the
    target's width).
    """
    _, inverse = transport_maps(state.transport, flow_static)
    latent = jax.vmap(inverse)(_recent_window(state))
    inside = jnp.all(jnp.isfinite(latent), -1) & (jnp.sum(latent**2, -1) <= stranded_threshold(latent.shape[-1]))
    weight = inside.astype(latent.dtype)
    count = jnp.sum(weight)
    latent = jnp.where(inside[:, None], latent, 0.0)
    mean = jnp.sum(latent * weight[:, None], 0) / jnp.maximum(count, 1.0)
    centred = (latent - mean) * weight[:, None]
    cov = centred.T @ centred / jnp.maximum(count - 1.0, 1.0)
    widest = jnp.sqrt(jnp.max(jnp.linalg.eigvalsh(cov)))
    widest = jnp.where(jnp.isfinite(widest) & (count >= 2), widest, 1.0)
    return jnp.asarray(0.5 * math.pi * jnp.clip(widest, 0.5, 10.0), state.trajectory_length.dtype)


def _candidates(state: CoreState):
    fresh = jax.tree.map(lambda leaf: leaf[state.adapt.num_fits], state.adapt.fresh_params)
    return jax.tree.map(lambda warm, new: jnp.concatenate([warm[None], new]), state.transport.params, fresh)


def _fit(key, state: CoreState, logdensity, flow_static, config: Config) -> tuple[Transport, jax.Array]:
    schedule = config.schedule
    points = state.adapt.window.reshape(-1, state.position.shape[-1])
    whitening = _window_whitening(state)
    if config.fit == "forward":
        whitened = (points - whitening.loc) @ whitening.inverse.T
        params, losses = fit_flow(
            key,
            _candidates(state),
            flow_static,
            whitened,
            num_steps=schedule.fit_steps,
            batch_size=schedule.batch_size,
            learning_rate=schedule.learning_rate,
        )
    else:
        params, losses = fit_flow_reverse(
            key,
            _candidates(state),
            flow_static,
            whitening,
            logdensity,
            num_steps=schedule.fit_steps,
            batch_size=schedule.batch_size,
            learning_rate=schedule.learning_rate,
        )
    return Transport(params, whitening), losses
