"""Functional core of flow-assisted MCMC on a batch of walkers (torch): one iteration with a fixed flow.

:func:`init` builds the state from positions; :func:`step` runs one
iteration: a global i-SIR move with the flow (once it has been fitted), then
local HMC/MALA moves preconditioned by the state's ``flow.local``. It
returns a new state and what the iteration reports, apart, and leaves its
input as it was. Warm-up (step size, flow fits) is composed with it by
:mod:`ebmppl.pyro.adaptation.flow_mcmc`. Randomness comes from torch's
generator. It mirrors :mod:`ebmppl.numpyro.kernels.core`.

Example:
    >>> import torch
    >>> from ebmppl.pyro.flows import default_flow, identity_whitening
    >>> from ebmppl.pyro.kernels import core
    >>> from ebmppl.pyro.moves import with_grad
    >>> logdensity = lambda x: -0.5 * (x**2).sum(-1)
    >>> target = core.Target(logdensity, with_grad(logdensity))
    >>> flow = core.FlowState(default_flow(2), identity_whitening(2), True, identity_whitening(2))
    >>> state = core.init(torch.zeros(8, 2), target, flow, 0.5)
    >>> state, info = core.step(state, target, core.Config(num_local_steps=3, num_leapfrog=1, num_particles=4))
    >>> tuple(info.accept_prob.shape), tuple(state.step_size.shape)
    ((8,), ())
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from ebmppl.pyro.flows import Whitening, defensive_proposal, proposal_log_prob, proposal_sample_and_log_prob
from ebmppl.pyro.moves import LocalState, hmc_step, isir_step

__all__ = ["Config", "CoreInfo", "CoreState", "FlowState", "Target", "init", "step"]


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
    """Settings of the moves.

    Attributes:
        num_local_steps: local moves per iteration.
        num_leapfrog: leapfrog steps per local move (1 is MALA).
        num_particles: i-SIR candidates per walker (2 is independent MH).
        defensive: share of the candidates from the wide Gaussian of the
            flow's whitening (see :func:`~ebmppl.pyro.flows.defensive_proposal`).
    """

    num_local_steps: int
    num_leapfrog: int
    num_particles: int
    defensive: float = 0.0


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


class CoreState(NamedTuple):
    """Walkers and the fixed parts of the kernel: what the next iteration needs, nothing more.

    Attributes:
        position: shape ``(C, D)``, unconstrained walkers, flattened.
        logdensity, grad: target log density and gradient at ``position``.
        step_size: the local step size (a 0-dimensional tensor).
        flow: the :class:`FlowState`.
    """

    position: torch.Tensor
    logdensity: torch.Tensor
    grad: torch.Tensor
    step_size: torch.Tensor
    flow: FlowState


class CoreInfo(NamedTuple):
    """What one iteration reports.

    Attributes:
        accept_prob: shape ``(C,)``, mean acceptance probability of the
            iteration's moves (global and local).
        local_accept_prob: shape ``(C,)``, mean acceptance of the local moves.
        global_accept_prob: shape ``(C,)``, probability that the global move
            left the current state (0 when none was made).
        num_nonfinite: shape ``(C,)``, proposals of this iteration rejected
            because the target's log density was not finite there.
    """

    accept_prob: torch.Tensor
    local_accept_prob: torch.Tensor
    global_accept_prob: torch.Tensor
    num_nonfinite: torch.Tensor


def init(position: torch.Tensor, target: Target, flow: FlowState, step_size) -> CoreState:
    """The state of walkers at ``position`` (shape ``(C, D)``); the flow is frozen."""
    logdensity, grad = target.logdensity_and_grad(position)
    flow.flow.requires_grad_(False)
    return CoreState(position, logdensity, grad, position.new_tensor(float(step_size)), flow)


def _proposal(flow, whitening: Whitening, defensive: float):
    """``(sample_and_log_prob, log_prob)`` of the global moves: the flow, or its defensive mixture."""
    if defensive > 0:
        return defensive_proposal(flow, whitening, defensive)
    return (lambda shape: proposal_sample_and_log_prob(flow, whitening, shape),
            lambda x: proposal_log_prob(flow, whitening, x))


def _global_move(state: CoreState, target: Target, config: Config):
    zeros = torch.zeros_like(state.logdensity)
    walkers = LocalState(state.position, state.logdensity, state.grad)
    if not state.flow.ready:
        return walkers, zeros, torch.zeros(zeros.shape, dtype=torch.int64, device=zeros.device)
    flow, whitening = state.flow.flow, state.flow.whitening
    with torch.no_grad():
        position, info = isir_step(
            state.position,
            state.logdensity,
            target.logdensity,
            *_proposal(flow, whitening, config.defensive),
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


def _local_moves(walkers: LocalState, state: CoreState, target: Target, config: Config):
    """``num_local_steps`` HMC/MALA moves in coordinates ``y = M⁻¹(x - loc)`` of the preconditioner."""
    w = state.flow.local
    whitened_value_and_grad = _whitened(target.logdensity_and_grad, w)
    start = LocalState((walkers.position - w.loc) @ w.inverse.T, walkers.logdensity, walkers.grad @ w.matrix)
    whitened, nonfinite, accepts = start, torch.zeros_like(walkers.logdensity, dtype=torch.int64), []
    for _ in range(config.num_local_steps):
        whitened, info = hmc_step(whitened, whitened_value_and_grad, state.step_size, config.num_leapfrog)
        nonfinite = nonfinite + info.num_nonfinite
        accepts.append(info.accept_prob)
    # walkers that did not move keep their position exactly (no round trip through the whitening)
    moved = (whitened.position != start.position).any(-1, keepdim=True)
    walkers = LocalState(
        torch.where(moved, w.loc + whitened.position @ w.matrix.T, walkers.position),
        whitened.logdensity,
        torch.where(moved, whitened.grad @ w.inverse, walkers.grad),
    )
    shape = walkers.logdensity.shape
    accepts = torch.stack(accepts) if accepts else walkers.logdensity.new_zeros((0,) + shape)
    return walkers, accepts, nonfinite


def step(state: CoreState, target: Target, config: Config) -> tuple[CoreState, CoreInfo]:
    """One iteration of flow-assisted MCMC (see the module docstring).

    Args:
        state: the current :class:`CoreState`.
        target: the batched log density.
        config: the moves' settings.

    Returns:
        The next :class:`CoreState` and the iteration's :class:`CoreInfo`.
    """
    walkers, global_accept, global_nonfinite = _global_move(state, target, config)
    walkers, local_accepts, local_nonfinite = _local_moves(walkers, state, target, config)
    local_accept = local_accepts.mean(0) if config.num_local_steps else torch.zeros_like(global_accept)
    num_moves = config.num_local_steps + int(state.flow.ready)
    info = CoreInfo(
        accept_prob=(local_accepts.sum(0) + global_accept) / max(num_moves, 1),
        local_accept_prob=local_accept,
        global_accept_prob=global_accept,
        num_nonfinite=global_nonfinite + local_nonfinite,
    )
    return state._replace(position=walkers.position, logdensity=walkers.logdensity, grad=walkers.grad), info


def _whitened(logdensity_and_grad: Callable, w: Whitening) -> Callable:
    """The log density and gradient in whitened coordinates ``y``, ``x = loc + M y`` (row vectors)."""

    def fn(y: torch.Tensor):
        value, grad = logdensity_and_grad(w.loc + y @ w.matrix.T)
        return value, grad @ w.matrix

    return fn
