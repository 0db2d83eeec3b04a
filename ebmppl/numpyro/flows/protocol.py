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

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import paramax
from flowjax.distributions import AbstractDistribution

from ebmppl.numpyro.flows.whitening import Whitening

__all__ = ["defensive_proposal", "join_flow_leaves", "partition_flow", "proposal_log_prob",
           "proposal_sample_and_log_prob", "split_flow_leaves", "wide_gaussian_log_prob"]


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


def wide_gaussian_log_prob(whitening: Whitening, x: jax.Array) -> jax.Array:
    """``log N(x; loc, (2M)(2M)ᵀ)``: a Gaussian twice as wide as the whitening ``(loc, M)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from ebmppl.numpyro.flows import identity_whitening
        >>> round(float(wide_gaussian_log_prob(identity_whitening(1), jnp.zeros(1))), 4)  # log N(0; 0, 2²)
        -1.6121
    """
    u = 0.5 * (x - whitening.loc) @ whitening.inverse.T
    dim = u.shape[-1]
    return -0.5 * jnp.sum(u**2, -1) - 0.5 * dim * jnp.log(2 * jnp.pi) - whitening.log_det - dim * jnp.log(2.0)


def defensive_proposal(flow: AbstractDistribution, whitening: Whitening, share: float):
    """The mixture ``(1 - share) q + share g`` of the whitened flow ``q`` and the wide Gaussian ``g``.

    ``g`` (:func:`wide_gaussian_log_prob`) has the whitening's centre and twice
    its spread: where the flow has too little mass (a mode it was never fitted
    on), the mixture still has some, so a proposal can land there and an
    importance weight stays bounded there.

    Args:
        flow: the flowjax flow, on whitened coordinates.
        whitening: the :class:`Whitening` to data coordinates.
        share: the mixture weight of ``g``, in ``[0, 1)``.

    Returns:
        ``(sample_and_log_prob, log_prob)``: ``(key, shape) -> (x, log m(x))``,
        each draw from ``g`` with probability ``share``, and the batched
        ``log m`` of the mixture ``m``.

    Example:
        >>> import jax
        >>> from ebmppl.numpyro.flows import default_flow, identity_whitening
        >>> sample, log_prob = defensive_proposal(default_flow(jax.random.key(0), 2), identity_whitening(2), 0.1)
        >>> x, log_m = sample(jax.random.key(1), (4,))
        >>> bool(jax.numpy.allclose(log_m, log_prob(x), atol=1e-5))
        True
    """

    def mixture(x, log_q):
        return jnp.logaddexp(jnp.log1p(-share) + log_q, jnp.log(share) + wide_gaussian_log_prob(whitening, x))

    def sample_and_log_prob(key, sample_shape):
        flow_key, wide_key, pick_key = jax.random.split(key, 3)
        x_flow, log_q = proposal_sample_and_log_prob(flow, whitening, flow_key, sample_shape)
        noise = jax.random.normal(wide_key, x_flow.shape, x_flow.dtype)
        x_wide = whitening.loc + 2.0 * noise @ whitening.matrix.T
        wide = jax.random.uniform(pick_key, sample_shape) < share
        x = jnp.where(wide[..., None], x_wide, x_flow)
        log_q = jnp.where(wide, _flow_log_prob_where(flow, whitening, x, wide, share), log_q)
        return x, mixture(x, log_q)

    def log_prob(x):
        return mixture(x, proposal_log_prob(flow, whitening, x))

    return sample_and_log_prob, log_prob


def _flow_log_prob_where(flow: AbstractDistribution, whitening: Whitening, x: jax.Array, where: jax.Array,
                         share: float) -> jax.Array:
    """The flow's log density at the points of ``x`` flagged by ``where`` (elsewhere: unspecified).

    ``where`` holds about ``share`` of the points (each flagged independently
    with that probability): the inverse pass runs on a fixed number of slots,
    six standard deviations above the expected count, instead of on every
    point; the rare draw that flags more takes further rounds of the same
    slots (one copy of the inverse in the compiled program). Exact either way.

    Example:
        >>> import equinox as eqx
        >>> from ebmppl.numpyro.flows import default_flow, identity_whitening, partition_flow
        >>> params, static = partition_flow(default_flow(jax.random.key(0), 3))
        >>> flow = eqx.combine(jax.tree.map(lambda a: a + 0.1, params), static)  # not the identity
        >>> x = 2.0 * jax.random.normal(jax.random.key(1), (25, 8, 3))
        >>> full = proposal_log_prob(flow, identity_whitening(3), x)
        >>> a_tenth = jax.random.uniform(jax.random.key(2), (25, 8)) < 0.1  # within the slots
        >>> every = jnp.ones((25, 8), bool)  # more than the slots: several rounds
        >>> [bool(jnp.allclose(_flow_log_prob_where(flow, identity_whitening(3), x, w, 0.1)[w], full[w],
        ...                    rtol=1e-5, atol=1e-5)) for w in (a_tenth, every)]
        [True, True]
    """
    dim = x.shape[-1]
    flat_x, flat_where = x.reshape(-1, dim), where.reshape(-1)
    n = flat_where.size
    slots = math.ceil(n * share + 6.0 * math.sqrt(n * share * (1.0 - share))) + 1
    if slots >= n:
        return proposal_log_prob(flow, whitening, x)

    def round_of_slots(carry):
        left, log_q = carry
        index = jnp.nonzero(left, size=slots, fill_value=n)[0]  # n: an empty slot
        some = proposal_log_prob(flow, whitening, flat_x[jnp.minimum(index, n - 1)])
        return left.at[index].set(False, mode="drop"), log_q.at[index].set(some, mode="drop")

    start = (flat_where, jnp.zeros(n, flat_x.dtype))
    return jax.lax.while_loop(lambda carry: carry[0].any(), round_of_slots, start)[1].reshape(where.shape)
