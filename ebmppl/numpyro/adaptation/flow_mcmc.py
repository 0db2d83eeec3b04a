"""FlowMCMC's warm-up, composed with :func:`ebmppl.numpyro.kernels.core.step`: step size, window, flow fits.

After every warm-up iteration :func:`update` adapts the local step size by
dual averaging, stores the walkers in the window, sums the target's score
for the local preconditioner and, at the iterations of the
:class:`~ebmppl.schedule.WarmupSchedule`, refits the flow by forward KL on
the window (the current flow warm-started beside fresh restarts, the lowest
loss kept) and sets the preconditioner (:func:`score_whitening`). Its state,
:class:`AdaptState`, is carried during warm-up only.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.adaptation import flow_mcmc
    >>> from ebmppl.schedule import WarmupSchedule
    >>> adapt = flow_mcmc.init(jnp.zeros((8, 2)), None, WarmupSchedule.default(100), 0.1)
    >>> adapt.window.shape
    (20, 8, 2)

    One warm-up iteration composed with the core, by hand (a schedule without fits):

    >>> from ebmppl.numpyro.flows import default_flow, identity_whitening, partition_flow
    >>> from ebmppl.numpyro.kernels import core
    >>> logdensity = lambda x: -0.5 * jnp.sum(x**2, -1)
    >>> target = core.Target(logdensity, jax.vmap(jax.value_and_grad(logdensity)))
    >>> params, static = partition_flow(default_flow(jax.random.key(0), 2))
    >>> flow = core.FlowState(params, identity_whitening(2), jnp.asarray(False), identity_whitening(2))
    >>> state = core.init(jnp.ones((8, 2)), target, flow, 0.1)
    >>> schedule = WarmupSchedule(fit_iterations=(), window=2)
    >>> adapt = flow_mcmc.init(state.position, None, schedule, 0.1)
    >>> config = core.Config(num_local_steps=3, num_leapfrog=1, num_particles=4)
    >>> state, info = core.step(jax.random.key(1), state, target, static, config)
    >>> settings = flow_mcmc.Settings(10, 0.65, schedule)
    >>> state, adapt = flow_mcmc.update(jax.random.key(1), adapt, state, info, static, settings)
    >>> int(adapt.i), int(adapt.score_count)  # one iteration, eight walkers' scores
    (1, 8)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ebmppl.numpyro.adaptation import dual_averaging, window
from ebmppl.numpyro.flows import Whitening, fit_diagonal_whitening, fit_flow, restart_candidates
from ebmppl.numpyro.kernels.core import CoreInfo, CoreState, FlowState, step_keys
from ebmppl.schedule import WarmupSchedule

__all__ = ["AdaptState", "Settings", "init", "score_whitening", "update"]


class Settings(NamedTuple):
    """What the warm-up needs to know of the run (hashable).

    Attributes:
        num_warmup: warm-up iterations.
        target_accept_prob: local acceptance aimed at.
        schedule: the warm-up schedule.
    """

    num_warmup: int
    target_accept_prob: float
    schedule: WarmupSchedule


class AdaptState(NamedTuple):
    """Warm-up bookkeeping.

    Attributes:
        i: warm-up iterations done.
        dual_averaging: the dual-averaging state of ``log(step_size)``.
        window: shape ``(W, C, D)``, the last ``W`` iterations' positions.
        fresh_params: initial parameters for fresh restarts, shape
            ``(num_fits, restarts, ...)`` per leaf.
        num_fits: fits done so far.
        fit_losses: shape ``(restarts + 1,)``, the last fit's candidate losses
            (warm start first); NaN before the first fit.
        score_sum: shape ``(D, D)``, the sum of ``∇log π ∇log πᵀ`` over walkers
            and iterations since the last fit (the local preconditioner's).
        score_count: how many finite gradients ``score_sum`` holds.
        score_total: shape ``(D,)``, the sum of those gradients.
    """

    i: jax.Array
    dual_averaging: tuple
    window: jax.Array
    fresh_params: Any
    num_fits: jax.Array
    fit_losses: jax.Array
    score_sum: jax.Array
    score_count: jax.Array
    score_total: jax.Array


def init(position: jax.Array, fresh_params: Any, schedule: WarmupSchedule, step_size) -> AdaptState:
    """Warm-up bookkeeping before the first iteration, for walkers at ``position`` ``(C, D)``."""
    dim = position.shape[-1]
    return AdaptState(
        i=jnp.zeros((), jnp.int32),
        dual_averaging=dual_averaging.init(step_size),
        window=window.init(schedule.window, position),
        fresh_params=fresh_params,
        num_fits=jnp.zeros((), jnp.int32),
        fit_losses=jnp.full((schedule.fresh_restarts + 1,), jnp.nan),
        score_sum=jnp.zeros((dim, dim), position.dtype),
        score_count=jnp.zeros((), position.dtype),
        score_total=jnp.zeros(dim, position.dtype),
    )


def update(key, adapt: AdaptState, state: CoreState, info: CoreInfo, flow_static,
           settings: Settings) -> tuple[CoreState, AdaptState]:
    """After warm-up iteration ``adapt.i``: step size, window, score sums and, when scheduled, a fit.

    Args:
        key: the iteration's key (split by :func:`~ebmppl.numpyro.kernels.core.step_keys`).
        adapt: the :class:`AdaptState`.
        state, info: the core's state and report after the iteration.
        flow_static: the static part of the flow.
        settings: the run's :class:`Settings`.
    """
    it = adapt.i
    da = dual_averaging.update(adapt.dual_averaging, info.local_accept_prob, settings.target_accept_prob)
    step_size = dual_averaging.next_step_size(da, it, settings.num_warmup)
    finite = jnp.all(jnp.isfinite(state.grad), -1)
    grad = jnp.where(finite[:, None], state.grad, 0.0)
    adapt = adapt._replace(
        i=it + 1, dual_averaging=da, window=window.update(adapt.window, it, state.position),
        score_sum=adapt.score_sum + grad.T @ grad, score_count=adapt.score_count + finite.sum(),
        score_total=adapt.score_total + grad.sum(0),
    )
    state = state._replace(step_size=step_size.astype(state.step_size.dtype))
    if not settings.schedule.fit_iterations:
        return state, adapt
    is_fit = jnp.any(it == jnp.asarray(settings.schedule.fit_iterations))
    fit_key = step_keys(key)[2]
    return jax.lax.cond(is_fit, lambda s, a: _refit(fit_key, s, a, flow_static, settings.schedule),
                        lambda s, a: (s, a), state, adapt)


def _refit(key, state: CoreState, adapt: AdaptState, flow_static, schedule: WarmupSchedule):
    """A scheduled fit: the flow on the window, the preconditioner from the score sums."""
    points = adapt.window.reshape(-1, state.position.shape[-1])
    whitening = fit_diagonal_whitening(points)
    whitened = (points - whitening.loc) @ whitening.inverse.T
    candidates = restart_candidates(state.flow.params, adapt.fresh_params, adapt.num_fits)
    params, losses = fit_flow(
        key, candidates, flow_static, whitened,
        num_steps=schedule.fit_steps, batch_size=schedule.batch_size, learning_rate=schedule.learning_rate,
    )
    local = score_whitening(adapt.score_sum, adapt.score_count, adapt.score_total)
    adapt = adapt._replace(
        # Step-size adaptation restarts: the walkers' distribution just changed.
        dual_averaging=dual_averaging.init(state.step_size),
        num_fits=adapt.num_fits + 1,
        fit_losses=losses,
        score_sum=jnp.zeros_like(adapt.score_sum),
        score_count=jnp.zeros_like(adapt.score_count),
        score_total=jnp.zeros_like(adapt.score_total),
    )
    return state._replace(flow=FlowState(params, whitening, jnp.asarray(True), local)), adapt


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
        >>> from ebmppl.numpyro.adaptation.flow_mcmc import score_whitening
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
