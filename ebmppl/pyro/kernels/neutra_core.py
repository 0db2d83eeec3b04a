"""Functional core of neural-transport HMC on a batch of walkers (torch): one iteration with a fixed transport.

The walkers live in the latent space of a transport ``x = T(z) = loc + M g(z)``
(``g`` a flow's base-to-data map, ``(loc, M)`` a standardisation fitted to the
chains; :mod:`ebmppl.pyro.moves.transport`) and move by HMC on the latent
log density ``log π(T(z)) + log|det J_T(z)|``, which is close to a standard
normal once the flow fits. :func:`init` builds the state; :func:`step` runs
one HMC move with a jittered number of leapfrog steps and returns a new
state and what it reports, apart, leaving its input as it was. Warm-up is
composed with it by :mod:`ebmppl.pyro.adaptation.neutra`. Randomness comes
from torch's generator. It mirrors :mod:`ebmppl.numpyro.kernels.neutra_core`.

Example:
    >>> import torch
    >>> from ebmppl.pyro.flows import identity_whitening, neutra_flow
    >>> from ebmppl.pyro.kernels import neutra_core
    >>> from ebmppl.pyro.kernels.core import Target
    >>> from ebmppl.pyro.moves import Transport, with_grad
    >>> logdensity = lambda x: -0.5 * (x**2).sum(-1)
    >>> target = Target(logdensity, with_grad(logdensity), logdensity)
    >>> transport = Transport(neutra_flow(2), identity_whitening(2))
    >>> state = neutra_core.init(torch.zeros(4, 2), target, transport, 0.5, 1.5)
    >>> state, info = neutra_core.step(state, target, 16)
    >>> 2 <= info.num_steps <= 5  # ceil(jittered length / step size)
    True
    >>> moved = neutra_core.relocate(state, torch.ones(4, 2), target)  # same transport, new place
    >>> moved.position[0].tolist(), float(moved.logdensity[0])
    ([1.0, 1.0], -1.0)
    >>> (value, aux), grad = neutra_core.value_and_grad(target, transport)(moved.walkers.position)
    >>> tuple(grad.shape)
    (4, 2)
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from ebmppl.pyro.kernels.core import Target
from ebmppl.pyro.moves import LocalState, Transport, hmc_step, latent_logdensity, transport_maps

__all__ = ["CoreInfo", "CoreState", "init", "relocate", "step", "value_and_grad"]


class CoreState(NamedTuple):
    """Walkers and the fixed parts of the kernel: what the next iteration needs, nothing more.

    Attributes:
        walkers: the walkers in the latent space (a :class:`~ebmppl.pyro.moves.LocalState`
            of the latent log density), with ``aux = (T(z), log π(T(z)))``, their
            data-space positions and the target's log density there.
        step_size: the leapfrog step size (a 0-dimensional tensor).
        trajectory_length: the mean trajectory length.
        transport: the :class:`~ebmppl.pyro.moves.Transport` (its flow frozen).
    """

    walkers: LocalState
    step_size: torch.Tensor
    trajectory_length: float
    transport: Transport

    @property
    def position(self) -> torch.Tensor:
        """Shape ``(C, D)``, the walkers in data space."""
        return self.walkers.aux[0]

    @property
    def logdensity(self) -> torch.Tensor:
        """Shape ``(C,)``, the target's log density at :attr:`position`."""
        return self.walkers.aux[1]


class CoreInfo(NamedTuple):
    """What one iteration reports.

    Attributes:
        accept_prob: shape ``(C,)``, acceptance probability of the move.
        diverging: shape ``(C,)``, whether the trajectory diverged.
        num_steps: leapfrog steps of the trajectory.
        num_nonfinite: shape ``(C,)``, 1 where the proposal was rejected
            because the target's log density or gradient was not finite there.
    """

    accept_prob: torch.Tensor
    diverging: torch.Tensor
    num_steps: int
    num_nonfinite: torch.Tensor


def value_and_grad(target: Target, transport: Transport) -> Callable:
    """The batched latent log density and its gradient, ``z -> ((value, (T(z), log π(T(z)))), grad)``."""
    fn = latent_logdensity(target.differentiable, transport)

    def evaluate(z):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            value, x, x_value = fn(z)
            (grad,) = torch.autograd.grad(value.sum(), z)
        return (value.detach(), (x.detach(), x_value.detach())), grad.detach()

    return evaluate


def init(position: torch.Tensor, target: Target, transport: Transport, step_size: float,
         trajectory_length: float) -> CoreState:
    """The state of walkers at data-space ``position`` (shape ``(C, D)``) under ``transport`` (frozen)."""
    transport.flow.requires_grad_(False)
    empty = LocalState(position, position.new_zeros(position.shape[:1]), torch.zeros_like(position))
    state = CoreState(empty, position.new_tensor(float(step_size)), float(trajectory_length), transport)
    return relocate(state, position, target)


def relocate(state: CoreState, position: torch.Tensor, target: Target) -> CoreState:
    """Put the walkers at data-space ``position`` under the state's transport."""
    _, inverse = transport_maps(state.transport)
    with torch.no_grad():
        latent = inverse(position)
    (value, aux), grad = value_and_grad(target, state.transport)(latent)
    return state._replace(walkers=LocalState(latent.detach(), value, grad, aux))


def step(state: CoreState, target: Target, max_leapfrog: int) -> tuple[CoreState, CoreInfo]:
    """One HMC move of every walker in the latent space, with a jittered trajectory length.

    Args:
        state: the current :class:`CoreState`.
        target: the batched log density (with its ``differentiable`` form).
        max_leapfrog: cap on the leapfrog steps of the trajectory.

    Returns:
        The next :class:`CoreState` and the iteration's :class:`CoreInfo`.
    """
    # Jittered trajectory length (uniform on [0.5, 1.5] of the mean) against periodic orbits.
    length = state.trajectory_length * (0.5 + float(torch.rand(())))
    num_steps = int(min(max(math.ceil(length / float(state.step_size)), 1), max_leapfrog))
    fn = value_and_grad(target, state.transport)
    walkers, info = hmc_step(state.walkers, fn, state.step_size, num_steps, has_aux=True)
    return state._replace(walkers=walkers), CoreInfo(info.accept_prob, info.diverging, num_steps, info.num_nonfinite)
