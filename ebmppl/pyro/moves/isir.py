"""Global moves: iterated sampling-importance-resampling (i-SIR) with a proposal.

Each walker keeps its state as one of ``N`` candidates, draws ``N - 1``
independent proposals, weighs every candidate by ``p(x) / q(x)`` and moves to
a candidate picked with probability proportional to its weight. The chain
leaves ``p`` invariant whatever ``q`` is. With ``N = 2`` the move is
independent Metropolis-Hastings (acceptance ``min(1, w_1 / w_0)``), which has
acceptance 1 when ``q = p``.

Example:
    >>> import torch
    >>> from ebmppl.pyro.moves.isir import isir_step
    >>> logp = lambda x: -0.5 * (x**2).sum(-1)
    >>> def sample(shape):
    ...     x = torch.randn(shape + (2,))
    ...     return x, logp(x)
    >>> x = torch.zeros(3, 2)
    >>> x2, info = isir_step(x, logp(x), logp, sample, logp, 2)
    >>> info.accept_prob  # the proposal is the target: always accepted
    tensor([1., 1., 1.])
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

__all__ = ["GlobalInfo", "isir_step"]


class GlobalInfo(NamedTuple):
    """What one global move reports.

    Attributes:
        accept_prob: shape ``(C,)``, probability of leaving the current state
            (IMH acceptance for ``N = 2``, ``1 -`` the current candidate's
            normalised weight for i-SIR).
        num_nonfinite: shape ``(C,)``, proposals rejected because the target's
            log density was not finite there.
    """

    accept_prob: torch.Tensor
    num_nonfinite: torch.Tensor


def isir_step(
    position: torch.Tensor,
    logdensity: torch.Tensor,
    logdensity_fn: Callable,
    proposal_sample_and_log_prob: Callable,
    proposal_log_prob: Callable,
    num_particles: int,
) -> tuple[torch.Tensor, GlobalInfo]:
    """One i-SIR (or, for two particles, independent MH) move of every walker.

    Args:
        position: shape ``(C, D)``, current walkers.
        logdensity: shape ``(C,)``, target log density at ``position``.
        logdensity_fn: batched target log density ``(n, D) -> (n,)``.
        proposal_sample_and_log_prob: ``shape -> (x, log q(x))``.
        proposal_log_prob: batched ``log q``.
        num_particles: ``N >= 2``, candidates per walker, the current one included.

    Returns:
        The new positions and a :class:`GlobalInfo`.
    """
    if num_particles < 2:
        raise ValueError(f"num_particles must be at least 2, got {num_particles}")
    num_walkers, dim = position.shape
    proposals, log_q = proposal_sample_and_log_prob((num_walkers, num_particles - 1))
    log_p = logdensity_fn(proposals.reshape(-1, dim)).reshape(num_walkers, num_particles - 1)
    bad_target = ~torch.isfinite(log_p)
    minus_inf = torch.tensor(-torch.inf, dtype=log_p.dtype, device=log_p.device)
    log_w = torch.where(bad_target | ~torch.isfinite(log_q), minus_inf, log_p - log_q)

    log_w_current = logdensity - proposal_log_prob(position)
    # Where q vanishes numerically at the current state its weight is infinite:
    # the walker stays, which is the exact limit of the move.
    stuck = ~torch.isfinite(log_w_current)
    log_w = torch.where(stuck[:, None], minus_inf, log_w)
    log_w_all = torch.cat([torch.where(stuck, 0.0, log_w_current)[:, None], log_w], dim=1)

    if num_particles == 2:
        accept_prob = (log_w_all[:, 1] - log_w_all[:, 0]).clamp(max=0.0).exp()
        index = (torch.rand_like(accept_prob) < accept_prob).long()
    else:
        probs = torch.softmax(log_w_all, dim=1)
        index = torch.multinomial(probs, 1)[:, 0]
        accept_prob = 1.0 - probs[:, 0]
    candidates = torch.cat([position[:, None], proposals], dim=1)
    new_position = candidates[torch.arange(num_walkers, device=index.device), index]
    return new_position, GlobalInfo(accept_prob, bad_target.sum(1))
