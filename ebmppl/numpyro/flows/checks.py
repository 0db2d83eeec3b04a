"""Refusing flows that cannot serve as independent proposals: wrong shape, conditional, or no exact inverse.

It mirrors :mod:`ebmppl.pyro.flows.checks`.

Example:
    >>> import jax
    >>> from ebmppl.numpyro.flows import check_flow, default_flow
    >>> check_flow(default_flow(jax.random.key(0), 2), 2)  # accepted: returns None
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import paramax
from flowjax.distributions import AbstractDistribution

__all__ = ["check_flow"]


def check_flow(flow, dim: int, key: jax.Array | None = None, atol: float = 1e-3) -> None:
    """Refuse a flow that cannot serve as an independent proposal.

    A proposal needs ``sample_and_log_prob`` and an exact, finite inverse:
    the round trip ``forward(inverse(x))`` must give ``x`` back.

    Raises:
        TypeError: not a flowjax distribution.
        ValueError: wrong shape, conditional, no exact inverse, or a round trip
            that does not return its input.

    Example:
        >>> import jax
        >>> from ebmppl.numpyro.flows import default_flow
        >>> check_flow(default_flow(jax.random.key(0), 2), 3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: flow must be unconditional with shape (3,) to match the latent space, got shape (2,) ...
    """
    if not isinstance(flow, AbstractDistribution):
        raise TypeError(f"flow must be a flowjax distribution, got {type(flow).__name__}")
    if flow.shape != (dim,) or flow.cond_shape is not None:
        raise ValueError(
            f"flow must be unconditional with shape ({dim},) to match the latent space, "
            f"got shape {flow.shape} and cond_shape {flow.cond_shape}"
        )
    numerical = _numerically_inverted_parts(flow)
    if numerical:
        raise ValueError(
            f"flow contains {', '.join(numerical)}, which has no exact inverse (it is inverted "
            "numerically, and block autoregressive flows have bounded tails): it cannot serve "
            "as an independent proposal. Use an exactly invertible flow (e.g. default_flow)."
        )
    key = jax.random.key(0) if key is None else key
    flow = paramax.unwrap(flow)
    bijection = getattr(flow, "bijection", None)
    if bijection is None:
        raise ValueError("flow must be a transformed distribution (base + bijection) to be inverted")
    try:
        x, x_back = _round_trip(flow, key)  # compiled once: op-by-op it costs seconds per flow
    except NotImplementedError as err:
        raise ValueError(
            f"flow {type(bijection).__name__} has no exact inverse: it cannot evaluate its own "
            "proposals' density. Use an exactly invertible flow (e.g. default_flow)."
        ) from err
    error = float(jnp.max(jnp.abs(x_back - x)))
    if not error <= atol * (1.0 + float(jnp.max(jnp.abs(x)))):
        raise ValueError(
            f"flow is not exactly invertible: forward(inverse(x)) differs from x by {error:.3g}"
        )


@eqx.filter_jit
def _round_trip(flow, key):
    """16 draws ``x`` of ``flow`` and ``forward(inverse(x))``."""
    x, _ = flow.sample_and_log_prob(key, (16,))
    z = jax.vmap(flow.bijection.inverse)(x)
    return x, jax.vmap(flow.bijection.transform)(z)


def _numerically_inverted_parts(flow) -> list[str]:
    from flowjax.bijections import BlockAutoregressiveNetwork
    from flowjax.bijections.utils import NumericalInverse

    kinds = (NumericalInverse, BlockAutoregressiveNetwork)
    found = jax.tree.leaves(flow, is_leaf=lambda node: isinstance(node, kinds))
    return sorted({type(node).__name__ for node in found if isinstance(node, kinds)})
