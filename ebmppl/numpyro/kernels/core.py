"""Functional core of flow-assisted MCMC on a batch of walkers.

:func:`init` builds the state from positions; :func:`step` runs one
iteration: a global i-SIR move with the flow (once it has been fitted), then
local HMC/MALA moves, then, during warm-up, step-size adaptation, storage of
the states in the training window and, at the scheduled iterations, a flow
fit. The state and the target are explicit; nothing is stored elsewhere.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from numpyro.infer.hmc_util import dual_averaging

from ebmppl.numpyro.flows import (
    Whitening,
    fit_flow,
    fit_whitening,
    proposal_log_prob,
    proposal_sample_and_log_prob,
)
from ebmppl.numpyro.moves.isir import isir_step
from ebmppl.numpyro.moves.hmc import LocalState, hmc_step
from ebmppl.schedule import WarmupSchedule

__all__ = ["AdaptState", "Config", "CoreState", "FlowState", "Target", "adapt_step_size", "init", "init_adapt",
           "score_whitening", "step"]

_da_init, _da_update = dual_averaging()


def _da_start(step_size) -> tuple:
    """Dual averaging started near ``step_size``, every leaf a float32 array
    (a weakly-typed Python number in a carried state would force recompiles)."""
    return tuple(jnp.asarray(a, jnp.float32) for a in _da_init(jnp.log(10.0 * step_size)))


class Target(NamedTuple):
    """The log density of the walkers, batched over a leading axis.

    Attributes:
        logdensity: ``(n, D) -> (n,)``.
        logdensity_and_grad: ``(n, D) -> ((n,), (n, D))``.
    """

    logdensity: Callable
    logdensity_and_grad: Callable


class Config(NamedTuple):
    """Static settings of one run (hashable; changes recompile).

    Attributes:
        num_warmup: warm-up iterations.
        num_local_steps: local moves per iteration.
        num_leapfrog: leapfrog steps per local move (1 is MALA).
        num_particles: i-SIR candidates per walker (2 is independent MH).
        target_accept_prob: local acceptance aimed at by step-size adaptation.
        schedule: the warm-up schedule.
    """

    num_warmup: int
    num_local_steps: int
    num_leapfrog: int
    num_particles: int
    target_accept_prob: float
    schedule: WarmupSchedule


class FlowState(NamedTuple):
    """The proposal: trainable flow parameters and the whitening they act in.

    Attributes:
        params: trainable arrays of the flow (combined with a static part).
        whitening: the affine map from whitened to latent coordinates.
        ready: whether global moves are made (false until the first fit of a
            flow built by ebmppl).
        local: the preconditioner of the local moves: ``M`` with ``M Mᵀ`` the
            inverse covariance of the target's score over the warm-up
            iterations before the last fit (at the target, the inverse Fisher
            information; for a Gaussian, its covariance). Unlike the walkers' covariance, it
            has the shape of one mode, not of the spread between modes.
    """

    params: Any
    whitening: Whitening
    ready: jax.Array
    local: Whitening


class AdaptState(NamedTuple):
    """Warm-up bookkeeping.

    Attributes:
        dual_averaging: NumPyro's dual-averaging state for ``log(step_size)``.
        window: shape ``(W, C, D)``, the last ``W`` iterations' positions.
        fresh_params: initial parameters for fresh restarts, shape
            ``(num_fits, restarts, ...)`` per leaf.
        num_fits: fits done so far.
        fit_losses: shape ``(restarts + 1,)``, the last fit's candidate losses
            (warm start first); NaN before the first fit.
        score_sum: shape ``(D, D)``, the sum of ``∇log π ∇log πᵀ`` over walkers
            and iterations since the last fit (FlowMCMC's preconditioner).
        score_count: how many finite gradients ``score_sum`` holds.
        score_total: shape ``(D,)``, the sum of those gradients.
    """

    dual_averaging: tuple
    window: jax.Array
    fresh_params: Any
    num_fits: jax.Array
    fit_losses: jax.Array
    score_sum: jax.Array
    score_count: jax.Array
    score_total: jax.Array


class CoreState(NamedTuple):
    """Walkers and everything the next iteration needs.

    Attributes:
        i: iterations done.
        position: shape ``(C, D)``, unconstrained walkers, flattened.
        logdensity, grad: target log density and gradient at ``position``.
        step_size: shape ``(C,)``, the local step size (equal for all walkers).
        accept_prob: shape ``(C,)``, mean acceptance probability of the
            iteration's moves (global and local).
        local_accept_prob: shape ``(C,)``, mean acceptance of the local moves.
        global_accept_prob: shape ``(C,)``, probability that the global move
            left the current state (0 when none was made).
        num_nonfinite: shape ``(C,)``, running count of proposals rejected
            because the target's log density was not finite there.
        flow: the :class:`FlowState`.
        adapt: the :class:`AdaptState`.
    """

    i: jax.Array
    position: jax.Array
    logdensity: jax.Array
    grad: jax.Array
    step_size: jax.Array
    accept_prob: jax.Array
    local_accept_prob: jax.Array
    global_accept_prob: jax.Array
    num_nonfinite: jax.Array
    flow: FlowState
    adapt: AdaptState


def init(
    position: jax.Array,
    target: Target,
    flow_params: Any,
    fresh_params: Any,
    config: Config,
    step_size: float,
    flow_ready: bool,
) -> CoreState:
    """The state of walkers at ``position`` (shape ``(C, D)``)."""
    num_walkers, dim = position.shape
    logdensity, grad = target.logdensity_and_grad(position)
    zeros = jnp.zeros(num_walkers)
    adapt = init_adapt(position, fresh_params, config.schedule, step_size)
    identity = _identity(dim, position.dtype)
    flow = FlowState(flow_params, identity, jnp.asarray(flow_ready), identity)
    return CoreState(
        i=jnp.zeros((), jnp.int32),
        position=position,
        logdensity=logdensity,
        grad=grad,
        step_size=jnp.full(num_walkers, step_size, position.dtype),
        accept_prob=zeros,
        local_accept_prob=zeros,
        global_accept_prob=zeros,
        num_nonfinite=jnp.zeros(num_walkers, jnp.int32),
        flow=flow,
        adapt=adapt,
    )


def init_adapt(position: jax.Array, fresh_params: Any, schedule: WarmupSchedule, step_size: float) -> AdaptState:
    """Warm-up bookkeeping before the first iteration, for walkers at ``position`` ``(C, D)``."""
    return AdaptState(
        dual_averaging=_da_start(step_size),
        window=jnp.zeros((schedule.window,) + position.shape, position.dtype),
        fresh_params=fresh_params,
        num_fits=jnp.zeros((), jnp.int32),
        fit_losses=jnp.full((schedule.fresh_restarts + 1,), jnp.nan),
        score_sum=jnp.zeros((position.shape[-1],) * 2, position.dtype),
        score_count=jnp.zeros((), position.dtype),
        score_total=jnp.zeros(position.shape[-1], position.dtype),
    )


def adapt_step_size(adapt: AdaptState, step_size, position, accept_prob, it, config) -> tuple:
    """One warm-up iteration's bookkeeping: dual averaging of the step size, the window.

    Args:
        adapt: the :class:`AdaptState`.
        step_size: shape ``(C,)``, the current step size.
        position: shape ``(C, D)``, the walkers after iteration ``it``.
        accept_prob: shape ``(C,)``, the acceptance probability adaptation aims at.
        it: the iteration just done (0-based).
        config: anything with ``target_accept_prob``, ``num_warmup`` and ``schedule``.

    Returns:
        ``(step_size, adapt)``: the averaged step size after the last warm-up iteration.
    """
    error = config.target_accept_prob - jnp.mean(accept_prob)
    da = tuple(jnp.asarray(a, jnp.float32) for a in _da_update(error, adapt.dual_averaging))
    log_step = jnp.where(it == config.num_warmup - 1, da[1], da[0])
    window = adapt.window.at[it % config.schedule.window].set(position)
    return jnp.full_like(step_size, jnp.exp(log_step)), adapt._replace(dual_averaging=da, window=window)


def _whitened(logdensity_and_grad: Callable, w: Whitening) -> Callable:
    """The log density and gradient in whitened coordinates ``y``, ``x = loc + M y`` (row vectors)."""

    def fn(y):
        value, grad = logdensity_and_grad(w.loc + y @ w.matrix.T)
        return value, grad @ w.matrix

    return fn


def _identity(dim, dtype):
    eye = jnp.eye(dim, dtype=dtype)
    return Whitening(jnp.zeros(dim, dtype), eye, eye, jnp.zeros((), dtype))


def _global_move(key, state: CoreState, target: Target, flow_static, config: Config):
    flow = eqx.combine(state.flow.params, flow_static)
    whitening = state.flow.whitening

    def move(_):
        position, info = isir_step(
            key,
            state.position,
            state.logdensity,
            target.logdensity,
            lambda k, shape: proposal_sample_and_log_prob(flow, whitening, k, shape),
            lambda x: proposal_log_prob(flow, whitening, x),
            config.num_particles,
        )
        logdensity, grad = target.logdensity_and_grad(position)
        return LocalState(position, logdensity, grad), info.accept_prob, info.num_nonfinite

    def skip(_):
        zeros = jnp.zeros_like(state.logdensity)
        local = LocalState(state.position, state.logdensity, state.grad)
        return local, zeros, jnp.zeros_like(state.num_nonfinite)

    return jax.lax.cond(state.flow.ready, move, skip, None)


def _fit(key, state: CoreState, flow_static, config: Config) -> tuple[FlowState, jax.Array]:
    schedule = config.schedule
    points = state.adapt.window.reshape(-1, state.position.shape[-1])
    whitening = fit_whitening(points)
    whitened = (points - whitening.loc) @ whitening.inverse.T
    fresh = jax.tree.map(lambda leaf: leaf[state.adapt.num_fits], state.adapt.fresh_params)
    candidates = jax.tree.map(
        lambda warm, new: jnp.concatenate([warm[None], new]), state.flow.params, fresh
    )
    params, losses = fit_flow(
        key,
        candidates,
        flow_static,
        whitened,
        num_steps=schedule.fit_steps,
        batch_size=schedule.batch_size,
        learning_rate=schedule.learning_rate,
    )
    local = score_whitening(state.adapt.score_sum, state.adapt.score_count, state.adapt.score_total)
    return FlowState(params, whitening, jnp.asarray(True), local), losses


def score_whitening(score_sum: jax.Array, count: jax.Array, score_total: jax.Array | None = None,
                    jitter: float = 1e-6) -> Whitening:
    """``M = F^(-1/2)`` for ``F = score_sum / count - m mᵀ``, ``m = score_total / count``
    (the identity when ``count`` is 0).

    At the target the score has mean zero and ``F`` is its Fisher information
    (the inverse covariance for a Gaussian). On the walkers' way in the mean
    score ``m`` is many times its spread; counted in ``F`` it would shrink the
    steps along the way in to about ``1 / |m|``, so it is left out. ``F`` is
    scaled to a unit diagonal before its eigendecomposition, so that the
    jitter is relative to each coordinate's own scale.

    Example:
        >>> import jax.numpy as jnp
        >>> from ebmppl.numpyro.kernels.core import score_whitening
        >>> w = score_whitening(jnp.diag(jnp.array([4.0, 0.25])) * 10, jnp.asarray(10.0))
        >>> jnp.round(jnp.diag(w.matrix @ w.matrix.T), 4).tolist()  # the covariance of N(0, diag(1/4, 4))
        [0.25, 4.0]
    """
    dim = score_sum.shape[-1]
    eye = jnp.eye(dim, dtype=score_sum.dtype)
    fisher = score_sum / jnp.maximum(count, 1.0)
    if score_total is not None:
        mean = score_total / jnp.maximum(count, 1.0)
        fisher = fisher - jnp.outer(mean, mean)
    usable = (count > 0) & jnp.all(jnp.isfinite(fisher))  # e.g. gradients that overflow far out
    fisher = jnp.where(usable, fisher, eye)
    # Jacobi scaling first, F = D S D with S of unit diagonal: the jitter and the rounding of the
    # eigendecomposition are then relative to each coordinate's own scale (on posteriordb's
    # kilpisjarvi the diagonal spans 1e7 and the ridge's eigenvalue is 1e-13 of the largest)
    scale = jnp.sqrt(jnp.diag(fisher))
    scale = jnp.where(scale > 0, scale, 1.0)
    eigvals, eigvecs = jnp.linalg.eigh(fisher / scale[:, None] / scale[None, :])
    eigvals = jnp.clip(eigvals, 0.0) + jitter * (jnp.mean(jnp.abs(eigvals)) + 1e-12)
    usable = usable & jnp.all(jnp.isfinite(eigvals)) & jnp.all(jnp.isfinite(scale))
    eigvals = jnp.where(usable, eigvals, 1.0)
    eigvecs = jnp.where(usable, eigvecs, eye)
    scale = jnp.where(usable, scale, 1.0)
    matrix = eigvecs / jnp.sqrt(eigvals) / scale[:, None]  # M = D^-1 V L^-1/2: M M^T = F^-1
    inverse = (eigvecs * jnp.sqrt(eigvals)).T * scale[None, :]  # M^-1 = L^1/2 V^T D
    log_det = -jnp.sum(jnp.log(scale)) - 0.5 * jnp.sum(jnp.log(eigvals))
    return Whitening(jnp.zeros(dim, score_sum.dtype), matrix, inverse, log_det)


def step(key: jax.Array, state: CoreState, target: Target, flow_static, config: Config) -> CoreState:
    """One iteration of flow-assisted MCMC (see the module docstring).

    Args:
        key: JAX key.
        state: the current :class:`CoreState`.
        target: the batched log density.
        flow_static: the static part of the flow.
        config: static settings.

    Returns:
        The next :class:`CoreState`.
    """
    global_key, local_key, fit_key = jax.random.split(key, 3)
    walkers, global_accept, nonfinite = _global_move(global_key, state, target, flow_static, config)

    # local moves in coordinates y = W⁻¹(x - loc) whitened at the last fit: a preconditioner fixed
    # between fits (and after warm-up), so that badly scaled or correlated targets mix
    w = state.flow.local
    whitened_value_and_grad = _whitened(target.logdensity_and_grad, w)

    def local(carry, local_step_key):
        walkers, nonfinite = carry
        walkers, info = hmc_step(
            local_step_key, walkers, whitened_value_and_grad, state.step_size, config.num_leapfrog
        )
        return (walkers, nonfinite + info.num_nonfinite), info.accept_prob

    start = LocalState((walkers.position - w.loc) @ w.inverse.T, walkers.logdensity, walkers.grad @ w.matrix)
    (whitened, nonfinite), local_accepts = jax.lax.scan(
        local, (start, nonfinite), jax.random.split(local_key, config.num_local_steps)
    )
    # walkers that did not move keep their position exactly (no round trip through the whitening)
    moved = jnp.any(whitened.position != start.position, -1, keepdims=True)
    walkers = LocalState(
        jnp.where(moved, w.loc + whitened.position @ w.matrix.T, walkers.position),
        whitened.logdensity,
        jnp.where(moved, whitened.grad @ w.inverse, walkers.grad),
    )
    local_accept = local_accepts.mean(0)
    num_moves = config.num_local_steps + state.flow.ready.astype(local_accept.dtype)
    accept = (local_accepts.sum(0) + global_accept) / num_moves

    state = state._replace(
        i=state.i + 1,
        position=walkers.position,
        logdensity=walkers.logdensity,
        grad=walkers.grad,
        accept_prob=accept,
        local_accept_prob=local_accept,
        global_accept_prob=global_accept,
        num_nonfinite=state.num_nonfinite + nonfinite,
    )
    if config.num_warmup == 0:
        return state
    return jax.lax.cond(
        state.i <= config.num_warmup,
        lambda s: _adapt(fit_key, s, flow_static, config),
        lambda s: s,
        state,
    )


def _adapt(key, state: CoreState, flow_static, config: Config) -> CoreState:
    """Warm-up only: step size, training window, scheduled flow fits."""
    it = state.i - 1  # the iteration just done
    step_size, adapt = adapt_step_size(
        state.adapt, state.step_size, state.position, state.local_accept_prob, it, config
    )
    finite = jnp.all(jnp.isfinite(state.grad), -1)
    grad = jnp.where(finite[:, None], state.grad, 0.0)
    adapt = adapt._replace(score_sum=adapt.score_sum + grad.T @ grad, score_count=adapt.score_count + finite.sum(),
                           score_total=adapt.score_total + grad.sum(0))
    state = state._replace(step_size=step_size, adapt=adapt)
    schedule = config.schedule
    if not schedule.fit_iterations:
        return state
    is_fit = jnp.any(it == jnp.asarray(schedule.fit_iterations))

    def do_fit(s: CoreState) -> CoreState:
        flow, losses = _fit(key, s, flow_static, config)
        adapt = s.adapt._replace(
            # Step-size adaptation restarts: the walkers' distribution just changed.
            dual_averaging=_da_start(s.step_size[0]),
            num_fits=s.adapt.num_fits + 1,
            fit_losses=losses,
            score_sum=jnp.zeros_like(s.adapt.score_sum),
            score_count=jnp.zeros_like(s.adapt.score_count),
            score_total=jnp.zeros_like(s.adapt.score_total),
        )
        return s._replace(flow=flow, adapt=adapt)

    return jax.lax.cond(is_fit, do_fit, lambda s: s, state)
