"""Local moves: HMC with an identity mass matrix, MALA being one leapfrog step.

Every function works on a batch of walkers ``position`` of shape ``(C, D)``
and a log density ``logdensity_and_grad(position) -> ((C,), (C, D))``.
Proposals whose log density or gradient is not finite are rejected and
counted.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.moves.hmc import hmc_step, LocalState
    >>> fn = jax.vmap(jax.value_and_grad(lambda x: -0.5 * jnp.sum(x**2)))
    >>> x = jnp.zeros((4, 2)); state = LocalState(x, *fn(x))
    >>> state, info = hmc_step(jax.random.key(0), state, fn, jnp.full(4, 0.5), 1)
    >>> info.accept_prob.shape
    (4,)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["LocalInfo", "LocalState", "hmc_step"]


class LocalState(NamedTuple):
    """Walkers and what is cached about them.

    Attributes:
        position: shape ``(C, D)``.
        logdensity: shape ``(C,)``, the target's log density at ``position``.
        grad: shape ``(C, D)``, its gradient.
    """

    position: jax.Array
    logdensity: jax.Array
    grad: jax.Array


class LocalInfo(NamedTuple):
    """What one local move reports.

    Attributes:
        accept_prob: shape ``(C,)``, Metropolis acceptance probability.
        num_nonfinite: shape ``(C,)``, 1 where the proposal's log density or
            gradient was not finite (and so was rejected).
    """

    accept_prob: jax.Array
    num_nonfinite: jax.Array


def hmc_step(
    key: jax.Array,
    state: LocalState,
    logdensity_and_grad: Callable,
    step_size: jax.Array,
    num_leapfrog: int,
) -> tuple[LocalState, LocalInfo]:
    """One Metropolis-adjusted HMC move of every walker (MALA if ``num_leapfrog == 1``).

    Args:
        key: JAX key.
        state: the walkers.
        logdensity_and_grad: batched log density and gradient.
        step_size: shape ``(C,)``, leapfrog step size per walker.
        num_leapfrog: number of leapfrog steps (static).

    Returns:
        The new state and a :class:`LocalInfo`.
    """
    momentum_key, accept_key = jax.random.split(key)
    eps = step_size[:, None]
    momentum = jax.random.normal(momentum_key, state.position.shape, state.position.dtype)

    def leapfrog(carry, _):
        position, logdensity, grad, p = carry
        p = p + 0.5 * eps * grad
        position = position + eps * p
        logdensity, grad = logdensity_and_grad(position)
        p = p + 0.5 * eps * grad
        return (position, logdensity, grad, p), None

    (position, logdensity, grad, p), _ = jax.lax.scan(
        leapfrog, (state.position, state.logdensity, state.grad, momentum), length=num_leapfrog
    )
    log_ratio = (logdensity - 0.5 * jnp.sum(p**2, -1)) - (
        state.logdensity - 0.5 * jnp.sum(momentum**2, -1)
    )
    finite = jnp.isfinite(log_ratio) & jnp.all(jnp.isfinite(grad), -1)
    log_ratio = jnp.where(finite, log_ratio, -jnp.inf)
    accept = jnp.log(jax.random.uniform(accept_key, log_ratio.shape)) < log_ratio
    new_state = jax.tree.map(
        lambda new, old: jnp.where(accept.reshape(accept.shape + (1,) * (new.ndim - 1)), new, old),
        LocalState(position, logdensity, grad),
        state,
    )
    info = LocalInfo(jnp.exp(jnp.minimum(log_ratio, 0.0)), (~finite).astype(jnp.int32))
    return new_state, info
