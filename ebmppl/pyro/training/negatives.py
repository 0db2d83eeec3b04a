"""The negatives of one update, one function per ``method`` (Pyro).

Each function takes ``(chains, target, options)`` and returns
:class:`Negatives`: the negative samples ``x-`` and the adapted MALA step
size. :data:`NEGATIVES` maps every name of :data:`ebmppl.options.METHODS`
to its function; the trainer looks the method up there once. Randomness
comes from torch's generator (``pyro.set_rng_seed``).

- ``"flow"`` (Grenioux et al. 2023): ``num_rounds`` rounds, each one i-SIR
  move proposed by the flow and ``num_local_steps`` MALA moves, from the
  pool's chains;
- ``"ula"``: the same rounds without the i-SIR move (persistent chains);
- ``"short-run"``: as ``"ula"``, from standard normal noise;
- ``"neutra"`` (NT-EBM, Nijkamp et al. 2020): ``num_local_steps`` MALA moves
  in the flow's latent space, where the log density is
  ``log ρ(z) - E(g(z))``, from base draws, mapped to data by the flow ``g``.

After each round the step size follows Robbins-Monro on its logarithm
toward ``options.target_accept_prob``.

Example:
    >>> from ebmppl.pyro.training.negatives import NEGATIVES
    >>> from ebmppl.options import METHODS
    >>> sorted(NEGATIVES) == sorted(METHODS)
    True
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from ebmppl.options import TrainerOptions
from ebmppl.pyro.flows import (
    base_log_prob,
    base_maps,
    identity_whitening,
    proposal_log_prob,
    proposal_sample_and_log_prob,
)
from ebmppl.pyro.moves import LocalState, hmc_step, isir_step, with_grad

__all__ = [
    "Chains", "NEGATIVES", "Negatives", "Target", "flow_negatives", "neutra_negatives", "short_run_negatives",
    "ula_negatives",
]


class Chains(NamedTuple):
    """Where the negatives of one update start.

    Attributes:
        start: shape ``(batch_size, D)``, the pool's chains drawn for the update.
        step_size: the current MALA step size, a float.

    Example:
        >>> import torch
        >>> Chains(torch.zeros(4, 2), 0.1).start.shape
        torch.Size([4, 2])
    """

    start: torch.Tensor
    step_size: float


class Target(NamedTuple):
    """The model the negatives are drawn from, with the update's parameters.

    Attributes:
        logdensity: ``(n, D) -> (n,)``, ``-energy`` plus the base's log density.
        energy: ``(n, D) -> (n,)``.
        flow: the flow module (its call returns the distribution).

    Example:
        >>> import torch
        >>> target = Target(lambda x: -(x**2).sum(-1), lambda x: (x**2).sum(-1), None)
        >>> target.energy(torch.ones(1, 2))
        tensor([2.])
    """

    logdensity: Callable
    energy: Callable
    flow: torch.nn.Module | None


class Negatives(NamedTuple):
    """The negatives of one update and what drawing them reports.

    Attributes:
        position: shape ``(batch_size, D)``, the negatives ``x-`` (detached).
        step_size: the adapted MALA step size, a float.
        global_accept_prob: mean i-SIR acceptance (0 without global moves).
        local_accept_prob: mean MALA acceptance.

    Example:
        >>> import torch
        >>> Negatives(torch.zeros(4, 2), 0.1, 0.0, 0.6).local_accept_prob
        0.6
    """

    position: torch.Tensor
    step_size: float
    global_accept_prob: float
    local_accept_prob: float


def flow_negatives(chains: Chains, target: Target, options: TrainerOptions) -> Negatives:
    """``"flow"``: rounds of one i-SIR move proposed by the flow and MALA moves, from the pool's chains.

    Example:
        >>> from ebmppl.pyro.flows import default_flow
        >>> target = Target(lambda x: -(x**2).sum(-1), None, default_flow(2))
        >>> options = TrainerOptions(batch_size=4, pool_size=4, num_rounds=2, num_local_steps=1, num_particles=4)
        >>> drawn = flow_negatives(Chains(torch.zeros(4, 2), 0.3), target, options.validate())
        >>> 0 <= drawn.global_accept_prob <= 1
        True
    """
    return _rounds(chains.start, chains.step_size, target, options, global_moves=True)


def ula_negatives(chains: Chains, target: Target, options: TrainerOptions) -> Negatives:
    """``"ula"``: rounds of MALA moves only, from the pool's chains (the flow is not used).

    Example:
        >>> gaussian = Target(lambda x: -(x**2).sum(-1), None, None)  # no flow needed
        >>> drawn = ula_negatives(Chains(torch.zeros(4, 2), 0.3), gaussian,
        ...                       TrainerOptions(method="ula", batch_size=4, pool_size=4, num_local_steps=2).validate())
        >>> drawn.global_accept_prob, drawn.position.shape
        (0.0, torch.Size([4, 2]))
    """
    return _rounds(chains.start, chains.step_size, target, options, global_moves=False)


def short_run_negatives(chains: Chains, target: Target, options: TrainerOptions) -> Negatives:
    """``"short-run"``: as ``"ula"`` from standard normal noise.

    Example:
        >>> far = Chains(torch.full((4, 2), 100.0), 0.3)  # the pool's chains are not used
        >>> gaussian = Target(lambda x: -(x**2).sum(-1), None, None)
        >>> options = TrainerOptions(method="short-run", batch_size=4, pool_size=4, num_local_steps=1).validate()
        >>> bool(short_run_negatives(far, gaussian, options).position.abs().max() < 10)
        True
    """
    return _rounds(torch.randn_like(chains.start), chains.step_size, target, options, global_moves=False)


def neutra_negatives(chains: Chains, target: Target, options: TrainerOptions) -> Negatives:
    """``"neutra"``: MALA on ``log ρ(z) - E(g(z))`` from base draws, mapped to data by the flow ``g``.

    ``chains.start`` gives only the shape, dtype and device: the chains start
    afresh at every update.

    Example:
        >>> from ebmppl.pyro.flows import default_flow
        >>> flow = default_flow(2)  # the backbone: here the identity
        >>> options = TrainerOptions(method="neutra", batch_size=4, pool_size=4, num_local_steps=1).validate()
        >>> target = Target(None, lambda x: (x**2).sum(-1), flow)
        >>> neutra_negatives(Chains(torch.zeros(4, 2), 0.5), target, options).position.shape
        torch.Size([4, 2])
    """
    forward, _ = base_maps(target.flow)

    def latent(z):
        return base_log_prob(target.flow, z) - target.energy(forward(z)[0])

    value_and_grad = with_grad(latent)
    start = chains.start
    z = torch.randn(options.batch_size, start.shape[-1], dtype=start.dtype, device=start.device)
    walkers, accept = _mala(LocalState(z, *value_and_grad(z)), value_and_grad, chains.step_size, options)
    with torch.no_grad():
        position = forward(walkers.position)[0]
    return Negatives(position.detach(), _adapted(chains.step_size, accept, options), 0.0, accept)


#: The negatives' function of each ``method`` (the trainer's only dispatch on it).
NEGATIVES: dict[str, Callable[..., Negatives]] = {
    "flow": flow_negatives,
    "ula": ula_negatives,
    "short-run": short_run_negatives,
    "neutra": neutra_negatives,
}


def _rounds(start, step_size: float, target: Target, options: TrainerOptions, global_moves: bool) -> Negatives:
    """``num_rounds`` rounds of (an i-SIR move with ``global_moves``, then) ``num_local_steps`` MALA moves."""
    logdensity_and_grad = with_grad(target.logdensity)
    whitening = identity_whitening(start.shape[-1], start.dtype, start.device)
    walkers = LocalState(start, *logdensity_and_grad(start))
    global_accepts, local_accepts = [], []
    for _ in range(options.num_rounds):
        if global_moves:
            with torch.no_grad():
                position, info = isir_step(
                    walkers.position, walkers.logdensity, target.logdensity,
                    lambda shape: proposal_sample_and_log_prob(target.flow, whitening, shape),
                    lambda x: proposal_log_prob(target.flow, whitening, x), options.num_particles,
                )
            walkers = LocalState(position, *logdensity_and_grad(position))
            global_accepts.append(float(info.accept_prob.mean()))
        walkers, accept = _mala(walkers, logdensity_and_grad, step_size, options)
        step_size = _adapted(step_size, accept, options)
        local_accepts.append(accept)
    global_acc = sum(global_accepts) / len(global_accepts) if global_accepts else 0.0
    return Negatives(walkers.position.detach(), step_size, global_acc, sum(local_accepts) / max(len(local_accepts), 1))


def _mala(walkers: LocalState, value_and_grad, step_size: float, options: TrainerOptions):
    """``num_local_steps`` MALA moves; the walkers and the moves' mean acceptance."""
    step_sizes = torch.full_like(walkers.logdensity, step_size)
    accepts = []
    for _ in range(options.num_local_steps):
        walkers, info = hmc_step(walkers, value_and_grad, step_sizes, 1)
        accepts.append(float(info.accept_prob.mean()))
    return walkers, sum(accepts) / max(len(accepts), 1)


def _adapted(step_size: float, accept: float, options: TrainerOptions) -> float:
    """Robbins-Monro on log(step size) toward the target acceptance."""
    return step_size * math.exp(0.1 * (accept - options.target_accept_prob))
