"""Functional core of neural-transport HMC on a batch of walkers (torch).

The walkers live in the latent space of a transport ``x = T(z) = loc + M g(z)``
(``g`` a flow's base-to-data map, ``(loc, M)`` a standardisation fitted to the
chains) and move by HMC on the latent log density
``log π(T(z)) + log|det J_T(z)|``, which is close to a standard normal once
the flow fits. :func:`init` builds the state; :func:`step` runs one
iteration: an HMC move with a jittered number of leapfrog steps, then, during
warm-up, step-size adaptation, storage of the walkers' data-space states and,
at the scheduled iterations, a refit of the transport (reverse KL to the
target, or forward KL on the stored states) followed by a new trajectory
length. Walkers keep their data-space position across a refit, except those
stranded far out in the new latent space, which start again from draws of
the transport. :func:`step`
returns a new state and leaves its input as it was; randomness comes from
torch's generator. It mirrors :mod:`ebmppl.numpyro.kernels.neutra_core`.

Example:
    >>> import torch
    >>> from ebmppl.pyro.flows import identity_whitening, neutra_flow
    >>> from ebmppl.pyro.moves.transport import Transport, latent_logdensity
    >>> fn = latent_logdensity(lambda x: -0.5 * (x**2).sum(-1), Transport(neutra_flow(2), identity_whitening(2)))
    >>> fn(torch.ones(1, 2))[0].tolist()  # a fresh flow is the identity: the target itself
    [-1.0]
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import nn

from ebmppl.pyro.flows import Whitening, base_maps, fit_diagonal_whitening, fit_flow, fit_flow_reverse, fresh_copy
from ebmppl.pyro.flows import identity_whitening
from ebmppl.pyro.kernels.core import AdaptState, Target, _da_start, adapt_step_size, init_adapt
from ebmppl.pyro.moves.transport import Transport, latent_logdensity
from ebmppl.schedule import WarmupSchedule

__all__ = ["Config", "CoreState", "init", "relocate", "step", "stranded_threshold"]

PREFIT_LEAPFROG = 32  # the cap on leapfrog steps before the first fit (see _leapfrog_cap)
DIVERGENCE_THRESHOLD = 1000.0  # an energy error above this ends a trajectory as divergent


class Config(NamedTuple):
    """Settings of one run.

    Attributes:
        num_warmup: warm-up iterations.
        target_accept_prob: acceptance aimed at by step-size adaptation.
        schedule: when and how the transport is fitted.
        fit: ``"reverse"`` (KL to the target) or ``"forward"`` (KL from the chains' states).
        max_leapfrog: cap on the leapfrog steps of one trajectory.
        trajectory_length: fixed trajectory length, or ``None`` to adapt it.
        flow_factory: ``dim -> flow`` for fresh restarts, or ``None`` (no restarts).
    """

    num_warmup: int
    target_accept_prob: float
    schedule: WarmupSchedule
    fit: str
    max_leapfrog: int
    trajectory_length: float | None
    flow_factory: Callable | None


class CoreState(NamedTuple):
    """Walkers and everything the next iteration needs.

    Attributes:
        i: iterations done.
        latent: shape ``(C, D)``, the walkers in the latent space.
        position: shape ``(C, D)``, ``T(latent)``, the walkers in data space.
        logdensity: shape ``(C,)``, the target's log density at ``position``.
        latent_logdensity, latent_grad: the latent log density and its gradient at ``latent``.
        step_size: shape ``(C,)``, the leapfrog step size (equal for all walkers).
        trajectory_length: the mean trajectory length.
        num_steps: leapfrog steps of the last trajectory.
        accept_prob: shape ``(C,)``, acceptance probability of the last move.
        diverging: shape ``(C,)``, whether the last trajectory diverged.
        num_nonfinite: shape ``(C,)``, running count of proposals rejected
            because the target's log density or gradient was not finite there.
        transport: the :class:`Transport`.
        adapt: the :class:`~ebmppl.pyro.kernels.core.AdaptState` (the window holds
            data-space positions).
    """

    i: int
    latent: torch.Tensor
    position: torch.Tensor
    logdensity: torch.Tensor
    latent_logdensity: torch.Tensor
    latent_grad: torch.Tensor
    step_size: torch.Tensor
    trajectory_length: float
    num_steps: int
    accept_prob: torch.Tensor
    diverging: torch.Tensor
    num_nonfinite: torch.Tensor
    transport: Transport
    adapt: AdaptState


def _value_and_grad(target: Target, transport: Transport) -> Callable:
    fn = latent_logdensity(target.differentiable, transport)

    def value_and_grad(z):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            value, x, x_value = fn(z)
            (grad,) = torch.autograd.grad(value.sum(), z)
        return value.detach(), x.detach(), x_value.detach(), grad.detach()

    return value_and_grad


def init(position: torch.Tensor, target: Target, flow: nn.Module, config: Config, step_size: float) -> CoreState:
    """The state of walkers at data-space ``position`` (shape ``(C, D)``), under the identity standardisation."""
    num_walkers, dim = position.shape
    adapt = init_adapt(position, config, step_size)
    flow.requires_grad_(False)
    zeros = position.new_zeros(num_walkers)
    state = CoreState(
        i=0,
        latent=position,
        position=position,
        logdensity=zeros,
        latent_logdensity=zeros,
        latent_grad=torch.zeros_like(position),
        step_size=position.new_full((num_walkers,), step_size),
        trajectory_length=0.5 * math.pi if config.trajectory_length is None else config.trajectory_length,
        num_steps=0,
        accept_prob=zeros,
        diverging=torch.zeros(num_walkers, dtype=torch.bool, device=position.device),
        num_nonfinite=torch.zeros(num_walkers, dtype=torch.int64, device=position.device),
        transport=Transport(flow, identity_whitening(dim, position.dtype, position.device)),
        adapt=adapt,
    )
    return relocate(state, position, target)


def relocate(state: CoreState, position: torch.Tensor, target: Target) -> CoreState:
    """Put the walkers at data-space ``position`` under the state's transport."""
    _, inverse = base_maps(state.transport.flow)
    w = state.transport.whitening
    with torch.no_grad():
        latent = inverse((position - w.loc) @ w.inverse.T)
    value, x, x_value, grad = _value_and_grad(target, state.transport)(latent)
    return state._replace(latent=latent.detach(), position=x, logdensity=x_value, latent_logdensity=value,
                          latent_grad=grad)


def _hmc(state: CoreState, value_and_grad: Callable, num_steps: int):
    """One HMC move of every walker with ``num_steps`` leapfrog steps."""
    eps = state.step_size[:, None]
    p0 = torch.randn_like(state.latent)
    z, value, x, x_value, grad, p = (
        state.latent, state.latent_logdensity, state.position, state.logdensity, state.latent_grad, p0
    )
    for _ in range(num_steps):
        p = p + 0.5 * eps * grad
        z = z + eps * p
        value, x, x_value, grad = value_and_grad(z)
        p = p + 0.5 * eps * grad
    energy_error = (0.5 * (p**2).sum(-1) - value) - (0.5 * (p0**2).sum(-1) - state.latent_logdensity)
    finite = torch.isfinite(energy_error) & torch.isfinite(grad).all(-1)
    diverging = ~finite | (energy_error > DIVERGENCE_THRESHOLD)
    log_ratio = torch.where(finite, -energy_error, torch.full_like(energy_error, -math.inf))
    accept = torch.rand_like(log_ratio).log() < log_ratio

    def pick(new, old):
        return torch.where(accept.reshape(accept.shape + (1,) * (new.dim() - 1)), new, old)

    moved = state._replace(
        latent=pick(z, state.latent),
        position=pick(x, state.position),
        logdensity=pick(x_value, state.logdensity),
        latent_logdensity=pick(value, state.latent_logdensity),
        latent_grad=pick(grad, state.latent_grad),
    )
    return moved, log_ratio.clamp(max=0.0).exp(), diverging, (~finite).long()


def step(state: CoreState, target: Target, config: Config) -> CoreState:
    """One iteration of neural-transport HMC (see the module docstring).

    Args:
        state: the current :class:`CoreState`.
        target: the batched log density (with its ``differentiable`` form).
        config: the run's settings.

    Returns:
        The next :class:`CoreState`.
    """
    # Jittered trajectory length (uniform on [0.5, 1.5] of the mean) against periodic orbits.
    length = state.trajectory_length * (0.5 + float(torch.rand(())))
    num_steps = int(min(max(math.ceil(length / float(state.step_size[0])), 1), _leapfrog_cap(state, config)))
    moved, accept_prob, diverging, nonfinite = _hmc(state, _value_and_grad(target, state.transport), num_steps)
    state = moved._replace(
        i=state.i + 1,
        num_steps=num_steps,
        accept_prob=accept_prob,
        diverging=diverging,
        num_nonfinite=state.num_nonfinite + nonfinite,
    )
    if state.i <= config.num_warmup:
        state = _adapt(state, target, config)
    return state


def _leapfrog_cap(state: CoreState, config: Config) -> int:
    """``config.max_leapfrog``, or :data:`PREFIT_LEAPFROG` while the first scheduled fit is still to come.

    Before it the walkers move in data space, where the trajectory length
    (set for a standardised latent space) can be many times the target's
    width; those iterations only have to bring the walkers in.
    """
    if config.schedule.fit_iterations and state.adapt.num_fits == 0 and state.i < config.num_warmup:
        return min(config.max_leapfrog, PREFIT_LEAPFROG)
    return config.max_leapfrog


def _adapt(state: CoreState, target: Target, config: Config) -> CoreState:
    """Warm-up only: step size, training window, scheduled transport fits."""
    it = state.i - 1  # the iteration just done
    step_size, adapt = adapt_step_size(state.adapt, state.step_size, state.position, state.accept_prob, it, config)
    state = state._replace(step_size=step_size, adapt=adapt)
    schedule = config.schedule
    if it not in schedule.fit_iterations:
        return state
    transport, losses = _fit(state, target, config)
    state = relocate(state._replace(transport=transport), state.position, target)
    state = _redraw_stranded(state, target)
    length = state.trajectory_length
    if config.trajectory_length is None:
        length = _trajectory_length(state)
    adapt = state.adapt._replace(
        # Step-size adaptation restarts: the latent geometry just changed.
        dual_averaging=_da_start(float(state.step_size[0])),
        num_fits=state.adapt.num_fits + 1,
        fit_losses=losses,
    )
    return state._replace(adapt=adapt, trajectory_length=length)


def stranded_threshold(dim: int) -> float:
    """``|z|²`` above which a walker is stranded: the ``1 - 10⁻⁶`` quantile of ``χ²_dim`` (Wilson-Hilferty)."""
    return dim * (1.0 - 2.0 / (9 * dim) + 4.753 * math.sqrt(2.0 / (9 * dim))) ** 3


def _redraw_stranded(state: CoreState, target: Target) -> CoreState:
    """Warm-up only: walkers far out in the latent tails (``|z|²`` beyond :func:`stranded_threshold`)
    start again from draws of the fitted transport.

    A walker started at a wildly improbable point (in a funnel's neck, 30
    standard deviations out) can reject every proposal under a step size set by
    the ensemble; after a fit it lies far out in the latent space, and a fresh
    draw ``T(z)``, ``z ~ N(0, I)``, puts it where the transport has mass.
    """
    stranded = (state.latent**2).sum(-1) > stranded_threshold(state.latent.shape[-1])
    stranded = stranded | ~torch.isfinite(state.latent_logdensity)
    if not stranded.any():
        return state
    latent = torch.where(stranded[:, None], torch.randn_like(state.latent), state.latent)
    value, x, x_value, grad = _value_and_grad(target, state.transport)(latent)
    replace = stranded & torch.isfinite(value) & torch.isfinite(grad).all(-1)

    def pick(new, old):
        return torch.where(replace.reshape(replace.shape + (1,) * (new.dim() - 1)), new, old)

    return state._replace(
        latent=pick(latent, state.latent),
        position=pick(x, state.position),
        logdensity=pick(x_value, state.logdensity),
        latent_logdensity=pick(value, state.latent_logdensity),
        latent_grad=pick(grad, state.latent_grad),
    )


def _recent_window(state: CoreState) -> torch.Tensor:
    """The later half of the window (the iterations after the one of the fit, ``it``, minus ``W / 2``), flattened."""
    window = state.adapt.window
    size = window.shape[0]
    it = state.i - 1
    rows = [(it - k) % size for k in range((size + 1) // 2)]
    return window[rows].reshape(-1, window.shape[-1])


def _window_whitening(state: CoreState) -> Whitening:
    """The standardisation a fit starts from: the median and MAD scale of the later half of the window.

    The early iterations of the first window are the walkers' way in, and a
    walker stuck far out (one in eight on posteriordb's earnings) would
    make the variance many times the target's: the median and the MAD
    ignore both, and a fit started from a Gaussian that wide can diverge.
    """
    return fit_diagonal_whitening(_recent_window(state), robust=True)


def _trajectory_length(state: CoreState) -> float:
    """A quarter period of HMC on the widest latent direction of the window: ``(π/2) σ_max``.

    Over the later half of the window and its points inside the latent
    ball of :func:`stranded_threshold` (a stuck walker's past is not the
    target's width).
    """
    _, inverse = base_maps(state.transport.flow)
    w = state.transport.whitening
    points = _recent_window(state)
    with torch.no_grad():
        latent = inverse((points - w.loc) @ w.inverse.T)
    inside = torch.isfinite(latent).all(-1) & ((latent**2).sum(-1) <= stranded_threshold(latent.shape[-1]))
    latent = latent[inside]
    if latent.shape[0] < 2:
        return 0.5 * math.pi
    cov = torch.atleast_2d(torch.cov(latent.T))
    widest = float(torch.linalg.eigvalsh(cov).max().sqrt())
    widest = widest if math.isfinite(widest) else 1.0
    return 0.5 * math.pi * min(max(widest, 0.5), 10.0)


def _candidates(state: CoreState, config: Config, dim: int) -> list[nn.Module]:
    candidates = [fresh_copy(state.transport.flow)]
    if config.flow_factory is not None:
        candidates += [config.flow_factory(dim) for _ in range(config.schedule.fresh_restarts)]
    return candidates


def _fit(state: CoreState, target: Target, config: Config) -> tuple[Transport, torch.Tensor]:
    schedule = config.schedule
    points = state.adapt.window.reshape(-1, state.position.shape[-1])
    candidates = _candidates(state, config, points.shape[-1])
    whitening = _window_whitening(state)
    if config.fit == "forward":
        flow, losses = fit_flow(
            candidates,
            (points - whitening.loc) @ whitening.inverse.T,
            num_steps=schedule.fit_steps,
            batch_size=schedule.batch_size,
            learning_rate=schedule.learning_rate,
        )
    else:
        flow, losses = fit_flow_reverse(
            candidates,
            whitening,
            target.differentiable,
            num_steps=schedule.fit_steps,
            batch_size=schedule.batch_size,
            learning_rate=schedule.learning_rate,
        )
    return Transport(flow, whitening), losses
