"""NeuTraHMC's warm-up, composed with :func:`ebmppl.pyro.kernels.neutra_core.step` (torch).

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
capped at :data:`PREFIT_LEAPFROG` steps (:func:`leapfrog_cap`). It mirrors
:mod:`ebmppl.numpyro.adaptation.neutra`.

Example:
    >>> from ebmppl.pyro.adaptation.neutra import stranded_threshold
    >>> round(stranded_threshold(10), 1)  # the 1 - 1e-6 quantile of chi-square with 10 degrees of freedom
    48.0

    One warm-up iteration composed with the core, by hand (a schedule without fits):

    >>> import torch
    >>> from ebmppl.pyro.adaptation import neutra
    >>> from ebmppl.pyro.flows import identity_whitening, neutra_flow
    >>> from ebmppl.pyro.kernels import neutra_core
    >>> from ebmppl.pyro.kernels.core import Target
    >>> from ebmppl.pyro.moves import Transport, with_grad
    >>> from ebmppl.schedule import WarmupSchedule
    >>> logdensity = lambda x: -0.5 * (x**2).sum(-1)
    >>> target = Target(logdensity, with_grad(logdensity), logdensity)
    >>> transport = Transport(neutra_flow(2), identity_whitening(2))
    >>> state = neutra_core.init(torch.ones(4, 2), target, transport, 0.5, 1.5)
    >>> schedule = WarmupSchedule(fit_iterations=(), window=2)
    >>> settings = neutra.Settings(10, 0.8, schedule, "reverse", 64, True, None)
    >>> adapt = neutra.init(state.position, schedule, 0.5, restarts=0)
    >>> neutra.leapfrog_cap(adapt, settings)
    64
    >>> state, info = neutra_core.step(state, target, 64)
    >>> state, adapt = neutra.update(adapt, state, info, target, settings)
    >>> adapt.i, tuple(adapt.window.shape)
    (1, (2, 4, 2))
    >>> w = neutra.window_whitening(adapt.window, 0)  # median and MAD scale of the window's later half
    >>> tuple(w.loc.shape), bool((torch.diag(w.matrix) > 0).all())
    ((2,), True)
    >>> neutra.trajectory_length(adapt.window, 0, transport) > 0
    True
    >>> far = neutra_core.relocate(state, torch.full((4, 2), 40.0), target)  # |z|² = 3200
    >>> float(neutra.redraw_stranded(far, target).position.abs().max()) < 10
    True
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from pyro.ops.dual_averaging import DualAveraging

from ebmppl.pyro.adaptation import dual_averaging, window
from ebmppl.pyro.flows import Whitening, fit_diagonal_whitening, fit_flow, fit_flow_reverse, restart_candidates
from ebmppl.pyro.kernels.core import Target
from ebmppl.pyro.kernels.neutra_core import CoreInfo, CoreState, relocate, value_and_grad
from ebmppl.pyro.moves import LocalState, Transport, transport_maps
from ebmppl.schedule import WarmupSchedule

__all__ = ["AdaptState", "PREFIT_LEAPFROG", "Settings", "init", "leapfrog_cap", "redraw_stranded",
           "stranded_threshold", "trajectory_length", "update", "window_whitening"]

PREFIT_LEAPFROG = 32  # the cap on leapfrog steps before the first fit (see leapfrog_cap)


class Settings(NamedTuple):
    """What the warm-up needs to know of the run.

    Attributes:
        num_warmup: warm-up iterations.
        target_accept_prob: acceptance aimed at by step-size adaptation.
        schedule: when and how the transport is fitted.
        fit: ``"reverse"`` (KL to the target) or ``"forward"`` (KL from the chains' states).
        max_leapfrog: cap on the leapfrog steps of one trajectory.
        adapt_length: whether the trajectory length is adapted at each fit.
        flow_factory: ``dim -> flow`` for fresh restarts, or ``None`` (no restarts).
    """

    num_warmup: int
    target_accept_prob: float
    schedule: WarmupSchedule
    fit: str
    max_leapfrog: int
    adapt_length: bool
    flow_factory: Callable | None


class AdaptState(NamedTuple):
    """Warm-up bookkeeping.

    Attributes:
        i: warm-up iterations done.
        dual_averaging: Pyro's dual-averaging state for ``log(step_size)``.
        window: shape ``(W, C, D)``, the last ``W`` iterations' data-space positions.
        num_fits: fits done so far.
        fit_losses: shape ``(restarts + 1,)``, the last fit's candidate losses; NaN before the first fit.
    """

    i: int
    dual_averaging: DualAveraging
    window: torch.Tensor
    num_fits: int
    fit_losses: torch.Tensor


def init(position: torch.Tensor, schedule: WarmupSchedule, step_size: float, restarts: int) -> AdaptState:
    """Warm-up bookkeeping before the first iteration, for walkers at ``position`` ``(C, D)``."""
    return AdaptState(
        i=0,
        dual_averaging=dual_averaging.init(step_size),
        window=window.init(schedule.window, position),
        num_fits=0,
        fit_losses=position.new_full((restarts + 1,), math.nan),
    )


def leapfrog_cap(adapt: AdaptState, settings: Settings) -> int:
    """``max_leapfrog``, or :data:`PREFIT_LEAPFROG` while the first scheduled fit is still to come.

    Before it the walkers move in data space, where the trajectory length
    (set for a standardised latent space) can be many times the target's
    width; those iterations only have to bring the walkers in.
    """
    if settings.schedule.fit_iterations and adapt.num_fits == 0 and adapt.i < settings.num_warmup:
        return min(settings.max_leapfrog, PREFIT_LEAPFROG)
    return settings.max_leapfrog


def update(adapt: AdaptState, state: CoreState, info: CoreInfo, target: Target,
           settings: Settings) -> tuple[CoreState, AdaptState]:
    """After warm-up iteration ``adapt.i``: step size, window and, when scheduled, a transport fit.

    Args:
        adapt: the :class:`AdaptState`.
        state, info: the core's state and report after the iteration.
        target: the batched log density (with its ``differentiable`` form).
        settings: the run's :class:`Settings`.
    """
    it = adapt.i
    da = dual_averaging.update(adapt.dual_averaging, info.accept_prob, settings.target_accept_prob)
    step_size = state.step_size.new_tensor(dual_averaging.next_step_size(da, it, settings.num_warmup))
    adapt = adapt._replace(i=it + 1, dual_averaging=da, window=window.update(adapt.window, it, state.position))
    state = state._replace(step_size=step_size)
    if it not in settings.schedule.fit_iterations:
        return state, adapt
    transport, losses = _fit(state, adapt, target, settings)
    state = relocate(state._replace(transport=transport), state.position, target)
    state = redraw_stranded(state, target)
    if settings.adapt_length:
        state = state._replace(trajectory_length=trajectory_length(adapt.window, it, state.transport))
    # Step-size adaptation restarts: the latent geometry just changed.
    adapt = adapt._replace(dual_averaging=dual_averaging.init(float(state.step_size)), num_fits=adapt.num_fits + 1,
                           fit_losses=losses)
    return state, adapt


def stranded_threshold(dim: int) -> float:
    """``|z|²`` above which a walker is stranded: the ``1 - 10⁻⁶`` quantile of ``χ²_dim`` (Wilson-Hilferty)."""
    return dim * (1.0 - 2.0 / (9 * dim) + 4.753 * math.sqrt(2.0 / (9 * dim))) ** 3


def redraw_stranded(state: CoreState, target: Target) -> CoreState:
    """Walkers far out in the latent tails (``|z|²`` beyond :func:`stranded_threshold`) start again
    from draws of the transport.

    A walker started at a wildly improbable point (in a funnel's neck, 30
    standard deviations out) can reject every proposal under a step size set by
    the ensemble; after a fit it lies far out in the latent space, and a fresh
    draw ``T(z)``, ``z ~ N(0, I)``, puts it where the transport has mass.
    """
    old = state.walkers
    stranded = (old.position**2).sum(-1) > stranded_threshold(old.position.shape[-1])
    stranded = stranded | ~torch.isfinite(old.logdensity)
    if not stranded.any():
        return state
    latent = torch.where(stranded[:, None], torch.randn_like(old.position), old.position)
    (value, aux), grad = value_and_grad(target, state.transport)(latent)
    replace = stranded & torch.isfinite(value) & torch.isfinite(grad).all(-1)

    def pick(new, kept):
        return torch.where(replace.reshape(replace.shape + (1,) * (new.dim() - 1)), new, kept)

    aux = tuple(pick(new, kept) for new, kept in zip(aux, old.aux))
    return state._replace(walkers=LocalState(pick(latent, old.position), pick(value, old.logdensity),
                                             pick(grad, old.grad), aux))


def window_whitening(positions: torch.Tensor, it: int) -> Whitening:
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


def trajectory_length(positions: torch.Tensor, it: int, transport: Transport) -> float:
    """A quarter period of HMC on the widest latent direction of the window: ``(π/2) σ_max``.

    Over the later half of the window (``positions``, ``(W, C, D)``, after
    warm-up iteration ``it``) and its points inside the latent ball of
    :func:`stranded_threshold` (a stuck walker's past is not the target's width).
    """
    _, inverse = transport_maps(transport)
    with torch.no_grad():
        latent = inverse(window.recent(positions, it))
    inside = torch.isfinite(latent).all(-1) & ((latent**2).sum(-1) <= stranded_threshold(latent.shape[-1]))
    latent = latent[inside]
    if latent.shape[0] < 2:
        return 0.5 * math.pi
    cov = torch.atleast_2d(torch.cov(latent.T))
    widest = float(torch.linalg.eigvalsh(cov).max().sqrt())
    widest = widest if math.isfinite(widest) else 1.0
    return 0.5 * math.pi * min(max(widest, 0.5), 10.0)


def _fit(state: CoreState, adapt: AdaptState, target: Target, settings: Settings) -> tuple[Transport, torch.Tensor]:
    schedule = settings.schedule
    points = adapt.window.reshape(-1, adapt.window.shape[-1])
    candidates = restart_candidates(state.transport.flow, settings.flow_factory, schedule.fresh_restarts, points)
    whitening = window_whitening(adapt.window, adapt.i - 1)
    budget = dict(num_steps=schedule.fit_steps, batch_size=schedule.batch_size, learning_rate=schedule.learning_rate)
    if settings.fit == "forward":
        flow, losses = fit_flow(candidates, (points - whitening.loc) @ whitening.inverse.T, **budget)
    else:
        flow, losses = fit_flow_reverse(candidates, whitening, target.differentiable, **budget)
    return Transport(flow, whitening), losses
