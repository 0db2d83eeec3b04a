"""The window of the last warm-up positions, a ring buffer ``(W, C, D)`` that the flow fits read.

Iteration ``it`` (0-based) is stored at row ``it % W``.

Example:
    >>> import jax.numpy as jnp
    >>> from ebmppl.numpyro.adaptation import window
    >>> buffer = window.init(4, jnp.zeros((2, 1)))
    >>> for it in range(6):
    ...     buffer = window.update(buffer, it, jnp.full((2, 1), float(it)))
    >>> window.recent(buffer, 5)[:, 0].tolist()  # the later half: iterations 5 and 4
    [5.0, 5.0, 4.0, 4.0]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["init", "recent", "update"]


def init(size: int, position: jax.Array) -> jax.Array:
    """An empty window of ``size`` iterations for walkers shaped like ``position`` ``(C, D)``."""
    return jnp.zeros((size,) + position.shape, position.dtype)


def update(window: jax.Array, it, position: jax.Array) -> jax.Array:
    """The window with iteration ``it``'s ``position`` stored."""
    return window.at[it % window.shape[0]].set(position)


def recent(window: jax.Array, it) -> jax.Array:
    """The later half of the window, the iterations ``it, it - 1, ...``, flattened to ``(n, D)``."""
    size = window.shape[0]
    rows = (it - jnp.arange((size + 1) // 2)) % size
    return window[rows].reshape(-1, window.shape[-1])
