"""JAX random keys of either style, as NumPyro's users write them.

NumPyro's tutorials make keys with ``jax.random.PRNGKey(0)`` (a raw
``uint32`` array of shape ``(2,)``), newer code with ``jax.random.key(0)``
(a typed key of shape ``()``). flowjax accepts only typed keys, so every place
where ebmppl takes a key converts it with :func:`typed_key` first.

Example:
    >>> import jax
    >>> from ebmppl.numpyro.keys import typed_key
    >>> typed_key(jax.random.PRNGKey(0)).shape, typed_key(jax.random.key(0)).shape
    ((), ())
    >>> bool(jax.random.key_data(typed_key(jax.random.PRNGKey(3))).tolist() == [0, 3])
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["is_typed_key", "typed_key"]


def is_typed_key(key) -> bool:
    """Whether ``key`` is a new-style typed key (or a batch of them)."""
    return hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def typed_key(key, name: str = "rng_key") -> jax.Array:
    """``key`` as a typed key: raw ``uint32`` keys (``PRNGKey``) are wrapped, typed ones kept.

    A batch works too (raw shape ``(..., 2)`` gives typed shape ``(...)``).

    Raises:
        TypeError: ``key`` is neither (an integer seed, a float array...).
    """
    if is_typed_key(key):
        return key
    dtype = getattr(key, "dtype", None)
    if dtype is not None and dtype == jnp.uint32 and jnp.ndim(key) >= 1 and jnp.shape(key)[-1] == 2:
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{name} must be a JAX random key, jax.random.key(seed) or jax.random.PRNGKey(seed); "
        f"got {type(key).__name__} with dtype {dtype} and shape {jnp.shape(key) if dtype is not None else None}"
    )
