"""Global moves: iterated sampling-importance-resampling (i-SIR) with a proposal.

Each walker keeps its state as one of ``N`` candidates, draws ``N - 1``
independent proposals, weighs every candidate by ``p(x) / q(x)`` and moves to
a candidate picked with probability proportional to its weight. The chain
leaves ``p`` invariant whatever ``q`` is. With ``N = 2`` the move is
independent Metropolis-Hastings (acceptance ``min(1, w_1 / w_0)``), which has
acceptance 1 when ``q = p``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.moves.isir import isir_step
    >>> logp = lambda x: -0.5 * jnp.sum(x**2, -1)
    >>> def sample(key, shape):
    ...     x = jax.random.normal(key, shape + (2,))
    ...     return x, logp(x)
    >>> x = jnp.zeros((3, 2))
    >>> x2, info = isir_step(jax.random.key(0), x, logp(x), logp, sample, logp, 2)
    >>> info.accept_prob  # the proposal is the target: always accepted
    Array([1., 1., 1.], dtype=float32)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["GlobalInfo", "isir_step"]


class GlobalInfo(NamedTuple):
    """What one global move reports.

    Attributes:
        accept_prob: shape ``(C,)``, probability of leaving the current state
            (IMH acceptance for ``N = 2``, ``1 -`` the current candidate's
            normalised weight for i-SIR).
        num_nonfinite: shape ``(C,)``, proposals rejected because the target's
            log density (or the proposal's) was not finite there.
    """

    accept_prob: jax.Array
    num_nonfinite: jax.Array


def isir_step(
    key: jax.Array,
    position: jax.Array,
    logdensity: jax.Array,
    logdensity_fn: Callable,
    proposal_sample_and_log_prob: Callable,
    proposal_log_prob: Callable,
    num_particles: int,
) -> tuple[jax.Array, GlobalInfo]:
    """One i-SIR (or, for two particles, independent MH) move of every walker.

    Args:
        key: JAX key.
        position: shape ``(C, D)``, current walkers.
        logdensity: shape ``(C,)``, target log density at ``position``.
        logdensity_fn: batched target log density ``(n, D) -> (n,)``.
        proposal_sample_and_log_prob: ``(key, shape) -> (x, log q(x))``.
        proposal_log_prob: batched ``log q``.
        num_particles: ``N >= 2``, candidates per walker, the current one included.

    Returns:
        The new positions and a :class:`GlobalInfo`.
    """
    if num_particles < 2:
        raise ValueError(f"num_particles must be at least 2, got {num_particles}")
    num_walkers, dim = position.shape
    proposal_key, choice_key = jax.random.split(key)
    proposals, log_q = proposal_sample_and_log_prob(proposal_key, (num_walkers, num_particles - 1))
    log_p = logdensity_fn(proposals.reshape(-1, dim)).reshape(num_walkers, num_particles - 1)
    bad_target = ~jnp.isfinite(log_p)
    log_w = jnp.where(bad_target | ~jnp.isfinite(log_q), -jnp.inf, log_p - log_q)

    log_w_current = logdensity - proposal_log_prob(position)
    # Where q vanishes numerically at the current state its weight is infinite:
    # the walker stays, which is the exact limit of the move.
    stuck = ~jnp.isfinite(log_w_current)
    log_w = jnp.where(stuck[:, None], -jnp.inf, log_w)
    log_w_all = jnp.concatenate([jnp.where(stuck, 0.0, log_w_current)[:, None], log_w], axis=1)

    if num_particles == 2:
        log_ratio = log_w_all[:, 1] - log_w_all[:, 0]
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        index = (jax.random.uniform(choice_key, (num_walkers,)) < accept_prob).astype(jnp.int32)
    else:
        index = jax.random.categorical(choice_key, log_w_all, axis=1)
        accept_prob = 1.0 - jax.nn.softmax(log_w_all, axis=1)[:, 0]
    candidates = jnp.concatenate([position[:, None], proposals], axis=1)
    new_position = jnp.take_along_axis(candidates, index[:, None, None], axis=1)[:, 0]
    return new_position, GlobalInfo(accept_prob, jnp.sum(bad_target, 1).astype(jnp.int32))
