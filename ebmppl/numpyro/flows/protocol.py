"""What adapts a flowjax flow to what the samplers need: trainable parts and the whitened proposal density.

Everything here is a pure function of explicit arrays, so it can run inside
``jit`` and ``lax.cond``. It mirrors :mod:`ebmppl.pyro.flows.protocol`.

Example: the density of a proposal's own draws, the flow scaled by a whitening.
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.flows import default_flow, fit_diagonal_whitening
    >>> from ebmppl.numpyro.flows.protocol import proposal_log_prob, proposal_sample_and_log_prob
    >>> flow = default_flow(jax.random.key(0), 2)
    >>> whitening = fit_diagonal_whitening(jnp.array([[0.0, 1.0], [4.0, 3.0]]))
    >>> x, log_q = proposal_sample_and_log_prob(flow, whitening, jax.random.key(1), (3,))
    >>> bool(jnp.allclose(proposal_log_prob(flow, whitening, x), log_q, atol=1e-4))
    True
"""

from __future__ import annotations

import equinox as eqx
import jax
import paramax
from flowjax.distributions import AbstractDistribution

from ebmppl.numpyro.flows.whitening import Whitening

__all__ = ["join_flow_leaves", "partition_flow", "proposal_log_prob", "proposal_sample_and_log_prob", "split_flow_leaves"]


def split_flow_leaves(flow) -> tuple[list, tuple]:
    """Split a flow into its arrays (a list, ``None`` elsewhere) and the hashable rest ``(treedef, others)``.

    A distribution that carries a flow keeps the arrays as pytree data and
    the rest (functions, sizes) as auxiliary data, so that the flow survives
    ``jax.tree.map`` and ``jax.jit`` of a function taking it, and follows
    what they do to its arrays. :func:`join_flow_leaves` undoes it.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ebmppl.numpyro.flows import neutra_flow
        >>> flow = neutra_flow(jax.random.key(0), 2)
        >>> arrays, rest = split_flow_leaves(flow)
        >>> join_flow_leaves(arrays, rest).log_prob(jnp.zeros(2)) == flow.log_prob(jnp.zeros(2))
        Array(True, dtype=bool)
    """
    leaves, treedef = jax.tree.flatten(flow)
    arrays = [leaf if eqx.is_array(leaf) else None for leaf in leaves]
    return arrays, (treedef, tuple(None if eqx.is_array(leaf) else leaf for leaf in leaves))


def join_flow_leaves(arrays: list, rest: tuple):
    """The flow that :func:`split_flow_leaves` split into ``arrays`` and ``rest``.

    Example:
        >>> import jax
        >>> from ebmppl.numpyro.flows import default_flow
        >>> arrays, rest = split_flow_leaves(default_flow(jax.random.key(0), 2))
        >>> join_flow_leaves([None if a is None else 2 * a for a in arrays], rest).shape  # arrays changed, rest kept
        (2,)
    """
    treedef, others = rest
    return jax.tree.unflatten(treedef, [other if array is None else array for array, other in zip(arrays, others)])


def partition_flow(flow: AbstractDistribution):
    """Split a flow into (trainable arrays, static rest), as flowjax trains it.

    Args:
        flow: a flowjax distribution.

    Returns:
        ``(params, static)``, with ``eqx.combine(params, static)`` the flow again;
        arrays wrapped in ``paramax.NonTrainable`` are in ``static``.

    Example:
        >>> import equinox as eqx, jax
        >>> from ebmppl.numpyro.flows import default_flow
        >>> flow = default_flow(jax.random.key(0), 2)
        >>> params, static = partition_flow(flow)
        >>> eqx.combine(params, static).shape
        (2,)
    """
    return eqx.partition(
        flow,
        eqx.is_inexact_array,
        is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable),
    )


def proposal_log_prob(flow: AbstractDistribution, whitening: Whitening, x: jax.Array) -> jax.Array:
    """Log density of the whitened flow at ``x`` (shape ``(..., D)``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ebmppl.numpyro.flows import default_flow, identity_whitening
        >>> flow = default_flow(jax.random.key(0), 2)  # fresh: a standard normal
        >>> round(float(proposal_log_prob(flow, identity_whitening(2), jnp.zeros(2))), 4)
        -1.8379
    """
    u = (x - whitening.loc) @ whitening.inverse.T
    return flow.log_prob(u) - whitening.log_det


def proposal_sample_and_log_prob(
    flow: AbstractDistribution, whitening: Whitening, key: jax.Array, sample_shape: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
    """Draws of the whitened flow, shape ``sample_shape + (D,)``, with their log density.

    Example:
        >>> import jax
        >>> from ebmppl.numpyro.flows import default_flow, identity_whitening
        >>> flow = default_flow(jax.random.key(0), 2)
        >>> x, log_q = proposal_sample_and_log_prob(flow, identity_whitening(2), jax.random.key(1), (4,))
        >>> x.shape, log_q.shape
        ((4, 2), (4,))
    """
    u, log_q = flow.sample_and_log_prob(key, sample_shape)
    return whitening.loc + u @ whitening.matrix.T, log_q - whitening.log_det
