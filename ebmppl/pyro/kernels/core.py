"""Functional core of flow-assisted MCMC on a batch of walkers (torch).

:func:`init` builds the state from positions; :func:`step` runs one
iteration: a global i-SIR move with the flow (once it has been fitted), then
local HMC/MALA moves, then, during warm-up, step-size adaptation, storage of
the states in the training window and, at the scheduled iterations, a flow
fit. The state and the target are explicit: :func:`step` returns a new state
and leaves its input as it was. Randomness comes from torch's generator.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, NamedTuple

import torch
from pyro.ops.dual_averaging import DualAveraging
from torch import nn

from ebmppl.pyro.flows import (
    Whitening,
    fit_flow,
    fit_whitening,
    fresh_copy,
    identity_whitening,
    proposal_log_prob,
    proposal_sample_and_log_prob,
)
from ebmppl.pyro.moves.isir import isir_step
from ebmppl.pyro.moves.hmc import LocalState, hmc_step
from ebmppl.schedule import WarmupSchedule

__all__ = ["AdaptState", "Config", "CoreState", "FlowState", "Target", "adapt_step_size", "init", "init_adapt",
           "score_whitening", "step"]


def _da_start(step_size: float) -> DualAveraging:
    """Dual averaging of ``log(step_size)``, started near ``step_size``."""
    return DualAveraging(prox_center=math.log(10.0 * step_size))


class Target(NamedTuple):
    """The log density of the walkers, batched over a leading axis.

    Attributes:
        logdensity: ``(n, D) -> (n,)``, without gradient.
        logdensity_and_grad: ``(n, D) -> ((n,), (n, D))``.
        differentiable: ``(n, D) -> (n,)`` in the autograd graph (for
            gradients through a flow), or ``None``.
    """

    logdensity: Callable
    logdensity_and_grad: Callable
    differentiable: Callable | None = None


class Config(NamedTuple):
    """Settings of one run.

    Attributes:
        num_warmup: warm-up iterations.
        num_local_steps: local moves per iteration.
        num_leapfrog: leapfrog steps per local move (1 is MALA).
        num_particles: i-SIR candidates per walker (2 is independent MH).
        target_accept_prob: local acceptance aimed at by step-size adaptation.
        schedule: the warm-up schedule.
        flow_factory: ``dim -> flow`` for fresh restarts, or ``None`` (no restarts).
    """

    num_warmup: int
    num_local_steps: int
    num_leapfrog: int
    num_particles: int
    target_accept_prob: float
    schedule: WarmupSchedule
    flow_factory: Callable | None


class FlowState(NamedTuple):
    """The proposal: a flow and the whitening it acts in.

    Attributes:
        flow: the flow module (frozen: its parameters do not require gradients).
        whitening: the affine map from whitened to latent coordinates.
        ready: whether global moves are made (false until the first fit of a
            flow built by ebmppl).
        local: the preconditioner of the local moves: ``M`` with ``M Mᵀ`` the
            inverse covariance of the target's score over the warm-up
            iterations before the last fit (at the target, the inverse Fisher
            information; for a Gaussian, its covariance). Unlike the walkers' covariance, it
            has the shape of one mode, not of the spread between modes.
    """

    flow: nn.Module
    whitening: Whitening
    ready: bool
    local: Whitening


class AdaptState(NamedTuple):
    """Warm-up bookkeeping.

    Attributes:
        dual_averaging: Pyro's dual-averaging state for ``log(step_size)``.
        window: shape ``(W, C, D)``, the last ``W`` iterations' positions.
        num_fits: fits done so far.
        fit_losses: shape ``(restarts + 1,)``, the last fit's candidate losses
            (warm start first); NaN before the first fit.
        score_sum: shape ``(D, D)``, the sum of ``∇log π ∇log πᵀ`` over walkers
            and iterations since the last fit (FlowMCMC's preconditioner).
        score_count: how many finite gradients ``score_sum`` holds.
        score_total: shape ``(D,)``, the sum of those gradients.
    """

    dual_averaging: DualAveraging
    window: torch.Tensor
    num_fits: int
    fit_losses: torch.Tensor
    score_sum: torch.Tensor
    score_count: int
    score_total: torch.Tensor


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

    i: int
    position: torch.Tensor
    logdensity: torch.Tensor
    grad: torch.Tensor
    step_size: torch.Tensor
    accept_prob: torch.Tensor
    local_accept_prob: torch.Tensor
    global_accept_prob: torch.Tensor
    num_nonfinite: torch.Tensor
    flow: FlowState
    adapt: AdaptState


def init(
    position: torch.Tensor,
    target: Target,
    flow: nn.Module,
    config: Config,
    step_size: float,
    flow_ready: bool,
) -> CoreState:
    """The state of walkers at ``position`` (shape ``(C, D)``)."""
    num_walkers, dim = position.shape
    logdensity, grad = target.logdensity_and_grad(position)
    zeros = torch.zeros_like(logdensity)
    adapt = init_adapt(position, config, step_size)
    flow.requires_grad_(False)
    identity = identity_whitening(dim, position.dtype, position.device)
    return CoreState(
        i=0,
        position=position,
        logdensity=logdensity,
        grad=grad,
        step_size=position.new_full((num_walkers,), step_size),
        accept_prob=zeros,
        local_accept_prob=zeros,
        global_accept_prob=zeros,
        num_nonfinite=torch.zeros(num_walkers, dtype=torch.int64, device=position.device),
        flow=FlowState(flow, identity, bool(flow_ready), identity),
        adapt=adapt,
    )


def init_adapt(position: torch.Tensor, config, step_size: float) -> AdaptState:
    """Warm-up bookkeeping before the first iteration, for walkers at ``position`` ``(C, D)``.

    ``config`` is anything with ``schedule`` and ``flow_factory``.
    """
    restarts = config.schedule.fresh_restarts if config.flow_factory is not None else 0
    return AdaptState(
        dual_averaging=_da_start(step_size),
        window=position.new_zeros((config.schedule.window,) + tuple(position.shape)),
        num_fits=0,
        fit_losses=position.new_full((restarts + 1,), math.nan),
        score_sum=position.new_zeros((position.shape[-1],) * 2),
        score_count=0,
        score_total=position.new_zeros(position.shape[-1]),
    )


def adapt_step_size(adapt: AdaptState, step_size, position, accept_prob, it: int, config) -> tuple:
    """One warm-up iteration's bookkeeping: dual averaging of the step size, the window.

    Args:
        adapt: the :class:`AdaptState`.
        step_size: shape ``(C,)``, the current step size.
        position: shape ``(C, D)``, the walkers after iteration ``it``.
        accept_prob: shape ``(C,)``, the acceptance probability adaptation aims
            at, or ``None`` to keep the step size.
        it: the iteration just done (0-based).
        config: anything with ``target_accept_prob``, ``num_warmup`` and ``schedule``.

    Returns:
        ``(step_size, adapt)``: the averaged step size after the last warm-up iteration.
    """
    da = copy.copy(adapt.dual_averaging)
    if accept_prob is not None:
        da.step(config.target_accept_prob - float(accept_prob.mean()))
        x_t, x_avg = da.get_state()
        log_step = x_avg if it == config.num_warmup - 1 else x_t
        step_size = torch.full_like(step_size, math.exp(log_step))
    window = adapt.window.clone()
    window[it % config.schedule.window] = position
    return step_size, adapt._replace(dual_averaging=da, window=window)


def _global_move(state: CoreState, target: Target, config: Config):
    zeros = torch.zeros_like(state.logdensity)
    walkers = LocalState(state.position, state.logdensity, state.grad)
    if not state.flow.ready:
        return walkers, zeros, torch.zeros_like(state.num_nonfinite)
    flow, whitening = state.flow.flow, state.flow.whitening
    with torch.no_grad():
        position, info = isir_step(
            state.position,
            state.logdensity,
            target.logdensity,
            lambda shape: proposal_sample_and_log_prob(flow, whitening, shape),
            lambda x: proposal_log_prob(flow, whitening, x),
            config.num_particles,
        )
    moved = (position != state.position).any(-1)
    if moved.any():
        logdensity, grad = target.logdensity_and_grad(position)
        walkers = LocalState(
            position,
            torch.where(moved, logdensity, state.logdensity),
            torch.where(moved[:, None], grad, state.grad),
        )
    return walkers, info.accept_prob, info.num_nonfinite


def _fit(state: CoreState, config: Config) -> tuple[FlowState, torch.Tensor]:
    schedule = config.schedule
    points = state.adapt.window.reshape(-1, state.position.shape[-1])
    whitening = fit_whitening(points)
    whitened = (points - whitening.loc) @ whitening.inverse.T
    candidates = [fresh_copy(state.flow.flow)]
    if config.flow_factory is not None:
        candidates += [
            config.flow_factory(points.shape[-1]).to(points.device, points.dtype)
            for _ in range(schedule.fresh_restarts)
        ]
    flow, losses = fit_flow(
        candidates,
        whitened,
        num_steps=schedule.fit_steps,
        batch_size=schedule.batch_size,
        learning_rate=schedule.learning_rate,
    )
    local = score_whitening(state.adapt.score_sum, state.adapt.score_count, state.adapt.score_total)
    return FlowState(flow, whitening, True, local), losses


def score_whitening(score_sum: torch.Tensor, count: int, score_total: torch.Tensor | None = None,
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
        >>> import torch
        >>> from ebmppl.pyro.kernels.core import score_whitening
        >>> w = score_whitening(torch.diag(torch.tensor([4.0, 0.25])) * 10, 10)
        >>> torch.diag(w.matrix @ w.matrix.T).round(decimals=4).tolist()  # the covariance of N(0, diag(1/4, 4))
        [0.25, 4.0]
    """
    dim, dtype, device = score_sum.shape[-1], score_sum.dtype, score_sum.device
    fisher = (score_sum / max(count, 1)).double()
    if score_total is not None:
        mean = (score_total / max(count, 1)).double()
        fisher = fisher - torch.outer(mean, mean)
    if count == 0 or not torch.isfinite(fisher).all():  # e.g. gradients that overflow far out
        return identity_whitening(dim, dtype, device)
    # Jacobi scaling first, F = D S D with S of unit diagonal: the jitter and the rounding of the
    # eigendecomposition are then relative to each coordinate's own scale (on posteriordb's
    # kilpisjarvi the diagonal spans 1e7 and the ridge's eigenvalue is 1e-13 of the largest)
    scale = torch.diagonal(fisher).sqrt()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    eigvals, eigvecs = torch.linalg.eigh(fisher / scale[:, None] / scale[None, :])
    eigvals = eigvals.clamp(min=0.0) + jitter * (eigvals.abs().mean() + 1e-12)
    matrix = eigvecs / eigvals.sqrt() / scale[:, None]  # M = D^-1 V L^-1/2: M M^T = F^-1
    inverse = (eigvecs * eigvals.sqrt()).T * scale[None, :]  # M^-1 = L^1/2 V^T D
    log_det = -scale.log().sum() - 0.5 * eigvals.log().sum()
    return Whitening(torch.zeros(dim, dtype=dtype, device=device), matrix.to(dtype), inverse.to(dtype), log_det.to(dtype))


def step(state: CoreState, target: Target, config: Config) -> CoreState:
    """One iteration of flow-assisted MCMC (see the module docstring).

    Args:
        state: the current :class:`CoreState`.
        target: the batched log density.
        config: the run's settings.

    Returns:
        The next :class:`CoreState`.
    """
    walkers, global_accept, nonfinite = _global_move(state, target, config)
    # local moves in coordinates y = W⁻¹(x - loc) whitened at the last fit: a preconditioner fixed
    # between fits (and after warm-up), so that badly scaled or correlated targets mix
    w = state.flow.local
    whitened_value_and_grad = _whitened(target.logdensity_and_grad, w)
    start = LocalState((walkers.position - w.loc) @ w.inverse.T, walkers.logdensity, walkers.grad @ w.matrix)
    whitened = start
    local_accepts = []
    for _ in range(config.num_local_steps):
        whitened, info = hmc_step(whitened, whitened_value_and_grad, state.step_size, config.num_leapfrog)
        nonfinite = nonfinite + info.num_nonfinite
        local_accepts.append(info.accept_prob)
    # walkers that did not move keep their position exactly (no round trip through the whitening)
    moved = (whitened.position != start.position).any(-1, keepdim=True)
    walkers = LocalState(
        torch.where(moved, w.loc + whitened.position @ w.matrix.T, walkers.position),
        whitened.logdensity,
        torch.where(moved, whitened.grad @ w.inverse, walkers.grad),
    )
    local_accepts = torch.stack(local_accepts) if local_accepts else global_accept.new_zeros((0,) + global_accept.shape)
    local_accept = local_accepts.mean(0) if config.num_local_steps else torch.zeros_like(global_accept)
    num_moves = config.num_local_steps + int(state.flow.ready)
    accept = (local_accepts.sum(0) + global_accept) / max(num_moves, 1)
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
    if state.i <= config.num_warmup:
        state = _adapt(state, config)
    return state


def _whitened(logdensity_and_grad: Callable, w: Whitening) -> Callable:
    """The log density and gradient in whitened coordinates ``y``, ``x = loc + M y`` (row vectors)."""

    def fn(y: torch.Tensor):
        value, grad = logdensity_and_grad(w.loc + y @ w.matrix.T)
        return value, grad @ w.matrix

    return fn


def _adapt(state: CoreState, config: Config) -> CoreState:
    """Warm-up only: step size, training window, scheduled flow fits."""
    it = state.i - 1  # the iteration just done
    accept = state.local_accept_prob if config.num_local_steps else None
    step_size, adapt = adapt_step_size(state.adapt, state.step_size, state.position, accept, it, config)
    finite = torch.isfinite(state.grad).all(-1)
    grad = torch.where(finite[:, None], state.grad, torch.zeros_like(state.grad))
    adapt = adapt._replace(score_sum=adapt.score_sum + grad.T @ grad, score_count=adapt.score_count + int(finite.sum()),
                           score_total=adapt.score_total + grad.sum(0))
    state = state._replace(step_size=step_size, adapt=adapt)
    schedule = config.schedule
    if it not in schedule.fit_iterations:
        return state
    flow, losses = _fit(state, config)
    adapt = state.adapt._replace(
        # Step-size adaptation restarts: the walkers' distribution just changed.
        dual_averaging=_da_start(float(state.step_size[0])),
        num_fits=state.adapt.num_fits + 1,
        fit_losses=losses,
        score_sum=torch.zeros_like(state.adapt.score_sum),
        score_count=0,
        score_total=torch.zeros_like(state.adapt.score_total),
    )
    return state._replace(flow=flow, adapt=adapt)
