"""FlowMCMC's warm-up, composed with :func:`ebmppl.pyro.kernels.core.step`: step size, window, flow fits (torch).

After every warm-up iteration :func:`update` adapts the local step size by
dual averaging, stores the walkers in the window, sums the target's score
for the local preconditioner and, at the iterations of the
:class:`~ebmppl.schedule.WarmupSchedule`, refits the flow by forward KL on
the window (a copy of the current flow warm-started beside fresh restarts,
the lowest loss kept) and sets the preconditioner (:func:`score_whitening`).
Its state, :class:`AdaptState`, is carried during warm-up only. It mirrors
:mod:`ebmppl.numpyro.adaptation.flow_mcmc`.

Example:
    >>> import torch
    >>> from ebmppl.pyro.adaptation import flow_mcmc
    >>> from ebmppl.schedule import WarmupSchedule
    >>> adapt = flow_mcmc.init(torch.zeros(8, 2), WarmupSchedule.default(100), 0.1, restarts=1)
    >>> tuple(adapt.window.shape)
    (20, 8, 2)

    One warm-up iteration composed with the core, by hand (a schedule without fits):

    >>> from ebmppl.pyro.flows import default_flow, identity_whitening
    >>> from ebmppl.pyro.kernels import core
    >>> from ebmppl.pyro.moves import with_grad
    >>> logdensity = lambda x: -0.5 * (x**2).sum(-1)
    >>> target = core.Target(logdensity, with_grad(logdensity))
    >>> flow = core.FlowState(default_flow(2), identity_whitening(2), False, identity_whitening(2))
    >>> state = core.init(torch.ones(8, 2), target, flow, 0.1)
    >>> schedule = WarmupSchedule(fit_iterations=(), window=2)
    >>> adapt = flow_mcmc.init(state.position, schedule, 0.1, restarts=0)
    >>> state, info = core.step(state, target, core.Config(num_local_steps=3, num_leapfrog=1, num_particles=4))
    >>> state, adapt = flow_mcmc.update(adapt, state, info, 3, flow_mcmc.Settings(10, 0.65, schedule, None))
    >>> adapt.i, adapt.score_count  # one iteration, eight walkers' scores
    (1, 8)
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from pyro.ops.dual_averaging import DualAveraging

from ebmppl.pyro.adaptation import dual_averaging, window
from ebmppl.pyro.flows import Whitening, fit_diagonal_whitening, fit_flow, identity_whitening, restart_candidates
from ebmppl.pyro.kernels.core import CoreInfo, CoreState, FlowState
from ebmppl.schedule import WarmupSchedule

__all__ = ["AdaptState", "Settings", "init", "score_whitening", "update"]


class Settings(NamedTuple):
    """What the warm-up needs to know of the run.

    Attributes:
        num_warmup: warm-up iterations.
        target_accept_prob: local acceptance aimed at.
        schedule: the warm-up schedule.
        flow_factory: ``dim -> flow`` for fresh restarts, or ``None`` (no restarts).
    """

    num_warmup: int
    target_accept_prob: float
    schedule: WarmupSchedule
    flow_factory: Callable | None


class AdaptState(NamedTuple):
    """Warm-up bookkeeping.

    Attributes:
        i: warm-up iterations done.
        dual_averaging: Pyro's dual-averaging state for ``log(step_size)``.
        window: shape ``(W, C, D)``, the last ``W`` iterations' positions.
        num_fits: fits done so far.
        fit_losses: shape ``(restarts + 1,)``, the last fit's candidate losses
            (warm start first); NaN before the first fit.
        score_sum: shape ``(D, D)``, the sum of ``∇log π ∇log πᵀ`` over walkers
            and iterations since the last fit (the local preconditioner's).
        score_count: how many finite gradients ``score_sum`` holds.
        score_total: shape ``(D,)``, the sum of those gradients.
    """

    i: int
    dual_averaging: DualAveraging
    window: torch.Tensor
    num_fits: int
    fit_losses: torch.Tensor
    score_sum: torch.Tensor
    score_count: int
    score_total: torch.Tensor


def init(position: torch.Tensor, schedule: WarmupSchedule, step_size: float, restarts: int) -> AdaptState:
    """Warm-up bookkeeping before the first iteration, for walkers at ``position`` ``(C, D)``.

    ``restarts`` is the number of fresh flows trained beside the warm start at each fit.
    """
    dim = position.shape[-1]
    return AdaptState(
        i=0,
        dual_averaging=dual_averaging.init(step_size),
        window=window.init(schedule.window, position),
        num_fits=0,
        fit_losses=position.new_full((restarts + 1,), math.nan),
        score_sum=position.new_zeros((dim, dim)),
        score_count=0,
        score_total=position.new_zeros(dim),
    )


def update(adapt: AdaptState, state: CoreState, info: CoreInfo, num_local_steps: int,
           settings: Settings) -> tuple[CoreState, AdaptState]:
    """After warm-up iteration ``adapt.i``: step size, window, score sums and, when scheduled, a fit.

    Args:
        adapt: the :class:`AdaptState`.
        state, info: the core's state and report after the iteration.
        num_local_steps: the local moves per iteration (without any, the step size stays).
        settings: the run's :class:`Settings`.
    """
    it = adapt.i
    da, step_size = adapt.dual_averaging, state.step_size
    if num_local_steps:
        da = dual_averaging.update(da, info.local_accept_prob, settings.target_accept_prob)
        step_size = step_size.new_tensor(dual_averaging.next_step_size(da, it, settings.num_warmup))
    finite = torch.isfinite(state.grad).all(-1)
    grad = torch.where(finite[:, None], state.grad, torch.zeros_like(state.grad))
    adapt = adapt._replace(
        i=it + 1, dual_averaging=da, window=window.update(adapt.window, it, state.position),
        score_sum=adapt.score_sum + grad.T @ grad, score_count=adapt.score_count + int(finite.sum()),
        score_total=adapt.score_total + grad.sum(0),
    )
    state = state._replace(step_size=step_size)
    if it not in settings.schedule.fit_iterations:
        return state, adapt
    return _refit(state, adapt, settings)


def _refit(state: CoreState, adapt: AdaptState, settings: Settings) -> tuple[CoreState, AdaptState]:
    """A scheduled fit: the flow on the window, the preconditioner from the score sums."""
    schedule = settings.schedule
    points = adapt.window.reshape(-1, state.position.shape[-1])
    whitening = fit_diagonal_whitening(points)
    whitened = (points - whitening.loc) @ whitening.inverse.T
    candidates = restart_candidates(state.flow.flow, settings.flow_factory, schedule.fresh_restarts, points)
    flow, losses = fit_flow(
        candidates, whitened,
        num_steps=schedule.fit_steps, batch_size=schedule.batch_size, learning_rate=schedule.learning_rate,
    )
    local = score_whitening(adapt.score_sum, adapt.score_count, adapt.score_total)
    adapt = adapt._replace(
        # Step-size adaptation restarts: the walkers' distribution just changed.
        dual_averaging=dual_averaging.init(float(state.step_size)),
        num_fits=adapt.num_fits + 1,
        fit_losses=losses,
        score_sum=torch.zeros_like(adapt.score_sum),
        score_count=0,
        score_total=torch.zeros_like(adapt.score_total),
    )
    return state._replace(flow=FlowState(flow, whitening, True, local)), adapt


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
        >>> from ebmppl.pyro.adaptation.flow_mcmc import score_whitening
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
