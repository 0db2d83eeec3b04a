"""One HMC transition of a batch of walkers (MALA being one leapfrog step), identity mass matrix.

Every function works on a batch of walkers ``position`` of shape ``(C, D)``
and a log density ``logdensity_and_grad(position) -> ((C,), (C, D))``. The
number of leapfrog steps may be static (a Python int: FlowMCMC's local moves,
the trainer's MALA) or traced (NeuTraHMC's jittered trajectories). With
``has_aux=True`` the log density also returns what the caller caches beside
it (``((value, aux), grad)``, JAX's ``value_and_grad(has_aux=True)``
convention), kept in :attr:`LocalState.aux`. Proposals whose log density or
gradient is not finite are rejected and counted.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.moves.hmc import hmc_step, LocalState
    >>> fn = jax.vmap(jax.value_and_grad(lambda x: -0.5 * jnp.sum(x**2)))
    >>> x = jnp.zeros((4, 2)); state = LocalState(x, *fn(x))
    >>> state, info = hmc_step(jax.random.key(0), state, fn, 0.5, 1)
    >>> info.accept_prob.shape
    (4,)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["DIVERGENCE_THRESHOLD", "LocalInfo", "LocalState", "hmc_step"]

#: an energy error above this ends a trajectory as divergent
DIVERGENCE_THRESHOLD = 1000.0


class LocalState(NamedTuple):
    """Walkers and what is cached about them.

    Attributes:
        position: shape ``(C, D)``.
        logdensity: shape ``(C,)``, the target's log density at ``position``.
        grad: shape ``(C, D)``, its gradient.
        aux: what the log density returns beside its value (``has_aux=True``), or ``None``.
    """

    position: jax.Array
    logdensity: jax.Array
    grad: jax.Array
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

    accept_prob: jax.Array
    num_nonfinite: jax.Array
    diverging: jax.Array


def hmc_step(
    key: jax.Array,
    state: LocalState,
    logdensity_and_grad: Callable,
    step_size,
    num_leapfrog,
    has_aux: bool = False,
) -> tuple[LocalState, LocalInfo]:
    """One Metropolis-adjusted HMC move of every walker (MALA if ``num_leapfrog == 1``).

    Args:
        key: JAX key.
        state: the walkers.
        logdensity_and_grad: batched log density and gradient
            (``((value, aux), grad)`` with ``has_aux``).
        step_size: the leapfrog step size, a scalar (or shape ``(C,)``, one per walker).
        num_leapfrog: number of leapfrog steps, a Python int or a traced integer.
        has_aux: whether ``logdensity_and_grad`` returns an auxiliary value.

    Returns:
        The new state and a :class:`LocalInfo`.
    """
    momentum_key, accept_key = jax.random.split(key)
    eps = step_size[:, None] if jnp.ndim(step_size) else step_size
    momentum = jax.random.normal(momentum_key, state.position.shape, state.position.dtype)
    evaluate = logdensity_and_grad if has_aux else (lambda x: _no_aux(logdensity_and_grad(x)))

    def leapfrog(_, carry):
        position, logdensity, grad, aux, p = carry
        p = p + 0.5 * eps * grad
        position = position + eps * p
        (logdensity, aux), grad = evaluate(position)
        p = p + 0.5 * eps * grad
        return position, logdensity, grad, aux, p

    start = (state.position, state.logdensity, state.grad, state.aux, momentum)
    position, logdensity, grad, aux, p = jax.lax.fori_loop(0, num_leapfrog, leapfrog, start)
    log_ratio = (logdensity - 0.5 * jnp.sum(p**2, -1)) - (state.logdensity - 0.5 * jnp.sum(momentum**2, -1))
    finite = jnp.isfinite(log_ratio) & jnp.all(jnp.isfinite(grad), -1)
    diverging = ~finite | (-log_ratio > DIVERGENCE_THRESHOLD)
    log_ratio = jnp.where(finite, log_ratio, -jnp.inf)
    accept = jnp.log(jax.random.uniform(accept_key, log_ratio.shape)) < log_ratio
    new_state = jax.tree.map(
        lambda new, old: jnp.where(accept.reshape(accept.shape + (1,) * (new.ndim - 1)), new, old),
        LocalState(position, logdensity, grad, aux),
        state,
    )
    info = LocalInfo(jnp.exp(jnp.minimum(log_ratio, 0.0)), (~finite).astype(jnp.int32), diverging)
    return new_state, info


def _no_aux(value_and_grad):
    value, grad = value_and_grad
    return (value, None), grad
