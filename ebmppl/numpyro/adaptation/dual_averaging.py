"""Dual averaging of ``log(step size)`` toward an acceptance target (Hoffman and Gelman 2014).

The kernels' warm-up adapts the step size with it: :func:`init` near a step
size, :func:`update` after every warm-up iteration, :func:`current` for the
next iteration and :func:`final` (the averaged iterate) after the last.

Example:
    >>> from ebmppl.numpyro.adaptation import dual_averaging
    >>> state = dual_averaging.init(0.1)
    >>> for _ in range(50):
    ...     state = dual_averaging.update(state, accept_prob=0.2, target=0.8)  # too large: shrink
    >>> float(dual_averaging.final(state)) < 0.1
    True
    >>> bool(dual_averaging.next_step_size(state, 98, 100) == dual_averaging.current(state))  # not the last yet
    True
    >>> bool(dual_averaging.next_step_size(state, 99, 100) == dual_averaging.final(state))
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.infer.hmc_util import dual_averaging

__all__ = ["current", "final", "init", "next_step_size", "update"]

_init, _update = dual_averaging()


def init(step_size) -> tuple:
    """The state started near ``step_size``, every leaf a float32 array (a weakly-typed Python
    number in a carried state would force recompiles)."""
    return tuple(jnp.asarray(a, jnp.float32) for a in _init(jnp.log(10.0 * step_size)))


def update(state: tuple, accept_prob, target: float) -> tuple:
    """One iteration's update from its mean acceptance probability ``accept_prob``."""
    error = target - jnp.mean(accept_prob)
    return tuple(jnp.asarray(a, jnp.float32) for a in _update(error, state))


def current(state: tuple) -> jax.Array:
    """The step size of the next warm-up iteration."""
    return jnp.exp(state[0])


def final(state: tuple) -> jax.Array:
    """The averaged step size, for after warm-up."""
    return jnp.exp(state[1])


def next_step_size(state: tuple, it, num_warmup: int) -> jax.Array:
    """The step size after warm-up iteration ``it``: :func:`current`, or :func:`final` after the last."""
    return jnp.where(it == num_warmup - 1, final(state), current(state))
