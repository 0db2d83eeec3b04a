"""One HMC transition of a batch of walkers (MALA being one leapfrog step), identity mass matrix (torch).

Every function works on a batch of walkers ``position`` of shape ``(C, D)``
and a log density ``logdensity_and_grad(position) -> ((C,), (C, D))``.
The number of leapfrog steps is any int (FlowMCMC's local moves, the
trainer's MALA, NeuTraHMC's jittered trajectories). With ``has_aux=True`` the
log density also returns what the caller caches beside it
(``((value, aux), grad)``), kept in :attr:`LocalState.aux`. Proposals whose
log density or gradient is not finite are rejected and counted. Randomness comes from torch's generator (Pyro's, seeded with
``pyro.set_rng_seed``).

Example:
    >>> import torch
    >>> from ebmppl.pyro.moves.hmc import hmc_step, LocalState
    >>> fn = lambda x: (-0.5 * (x**2).sum(-1), -x)
    >>> x = torch.zeros(4, 2); state = LocalState(x, *fn(x))
    >>> state, info = hmc_step(state, fn, torch.full((4,), 0.5), 1)
    >>> info.accept_prob.shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch

__all__ = ["DIVERGENCE_THRESHOLD", "LocalInfo", "LocalState", "hmc_step", "with_grad"]

#: an energy error above this ends a trajectory as divergent
DIVERGENCE_THRESHOLD = 1000.0


class LocalState(NamedTuple):
    """Walkers and what is cached about them.

    Attributes:
        position: shape ``(C, D)``.
        logdensity: shape ``(C,)``, the target's log density at ``position``.
        grad: shape ``(C, D)``, its gradient.
        aux: what the log density returns beside its value (``has_aux=True``): a
            tuple of tensors with a leading walker axis, or ``None``.
    """

    position: torch.Tensor
    logdensity: torch.Tensor
    grad: torch.Tensor
    aux: Any = None


class LocalInfo(NamedTuple):
    """What one transition reports.

    Attributes:
        accept_prob: shape ``(C,)``, Metropolis acceptance probability.
        num_nonfinite: shape ``(C,)``, 1 where the proposal's log density or
            gradient was not finite (and so was rejected).
        diverging: shape ``(C,)``, whether the energy error exceeded
            :data:`DIVERGENCE_THRESHOLD` (or was not finite).
    """

    accept_prob: torch.Tensor
    num_nonfinite: torch.Tensor
    diverging: torch.Tensor


def hmc_step(
    state: LocalState,
    logdensity_and_grad: Callable,
    step_size,
    num_leapfrog: int,
    has_aux: bool = False,
) -> tuple[LocalState, LocalInfo]:
    """One Metropolis-adjusted HMC move of every walker (MALA if ``num_leapfrog == 1``).

    Args:
        state: the walkers.
        logdensity_and_grad: batched log density and gradient
            (``((value, aux), grad)`` with ``has_aux``).
        step_size: the leapfrog step size, a float (or shape ``(C,)``, one per walker).
        num_leapfrog: number of leapfrog steps.
        has_aux: whether ``logdensity_and_grad`` returns an auxiliary value.

    Returns:
        The new state and a :class:`LocalInfo`.
    """
    eps = step_size[:, None] if torch.is_tensor(step_size) and step_size.dim() else step_size
    momentum = torch.randn_like(state.position)
    position, logdensity, grad, aux, p = state.position, state.logdensity, state.grad, state.aux, momentum
    for _ in range(num_leapfrog):
        p = p + 0.5 * eps * grad
        position = position + eps * p
        if has_aux:
            (logdensity, aux), grad = logdensity_and_grad(position)
        else:
            logdensity, grad = logdensity_and_grad(position)
        p = p + 0.5 * eps * grad
    log_ratio = (logdensity - 0.5 * (p**2).sum(-1)) - (state.logdensity - 0.5 * (momentum**2).sum(-1))
    finite = torch.isfinite(log_ratio) & torch.isfinite(grad).all(-1)
    diverging = ~finite | (-log_ratio > DIVERGENCE_THRESHOLD)
    log_ratio = torch.where(finite, log_ratio, torch.full_like(log_ratio, -torch.inf))
    accept = torch.rand_like(log_ratio).log() < log_ratio

    def pick(new, old):
        return torch.where(accept.reshape(accept.shape + (1,) * (new.dim() - 1)), new, old)

    new_aux = None if aux is None else tuple(pick(new, old) for new, old in zip(aux, state.aux))
    new_state = LocalState(pick(position, state.position), pick(logdensity, state.logdensity),
                           pick(grad, state.grad), new_aux)
    info = LocalInfo(log_ratio.clamp(max=0.0).exp(), (~finite).to(torch.int64), diverging)
    return new_state, info


def with_grad(logdensity: Callable) -> Callable:
    """``x -> (logdensity(x), d logdensity / dx)`` by autograd, for a batched log density (walkers are independent).

    Example:
        >>> import torch
        >>> fn = with_grad(lambda x: -0.5 * (x**2).sum(-1))
        >>> fn(torch.ones(2, 3))[1].tolist()
        [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]
    """

    def logdensity_and_grad(position: torch.Tensor):
        x = position.detach().requires_grad_(True)
        with torch.enable_grad():
            value = logdensity(x)
            grad = None
            if value.requires_grad:
                (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad
        return value.detach(), grad.detach()

    return logdensity_and_grad
