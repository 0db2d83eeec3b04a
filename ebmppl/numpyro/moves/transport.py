"""The transport of neural-transport moves: ``x = T(z) = loc + M g(z)`` and the latent log density.

``g`` is a flow's bijection and ``(loc, M)`` a whitening; HMC in the latent
space moves on ``log π(T(z)) + log|det J_T(z)|``, which is close to a
standard normal once the flow fits the target.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.flows import identity_whitening, neutra_flow, partition_flow
    >>> from ebmppl.numpyro.moves.transport import Transport, latent_logdensity
    >>> params, static = partition_flow(neutra_flow(jax.random.key(0), 2))
    >>> fn = latent_logdensity(lambda x: -0.5 * jnp.sum(x**2), Transport(params, identity_whitening(2)), static)
    >>> float(fn(jnp.ones(2))[0])  # a fresh flow is the identity: the target itself
    -1.0
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import equinox as eqx

__all__ = ["Transport", "latent_logdensity", "transport_maps"]


class Transport(NamedTuple):
    """The map from latent to data space: trainable flow parameters and the whitening.

    Attributes:
        params: trainable arrays of the flow (combined with a static part).
        whitening: the affine map (a ``Whitening``) from the flow's output to data coordinates.
    """

    params: Any
    whitening: Any


def transport_maps(transport: Transport, flow_static) -> tuple[Callable, Callable]:
    """``(forward, inverse)`` of one point: ``z -> (x, log|det J_T(z)|)`` and ``x -> z``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ebmppl.numpyro.flows import identity_whitening, neutra_flow, partition_flow
        >>> params, static = partition_flow(neutra_flow(jax.random.key(0), 2))
        >>> forward, inverse = transport_maps(Transport(params, identity_whitening(2)), static)
        >>> inverse(forward(jnp.ones(2))[0]).tolist()
        [1.0, 1.0]
    """
    bijection = eqx.combine(transport.params, flow_static).bijection
    w = transport.whitening

    def forward(z):
        u, log_det = bijection.transform_and_log_det(z)
        return w.loc + w.matrix @ u, log_det + w.log_det

    def inverse(x):
        return bijection.inverse(w.inverse @ (x - w.loc))

    return forward, inverse


def latent_logdensity(logdensity: Callable, transport: Transport, flow_static) -> Callable:
    """The latent log density of one point, ``z -> (log π(T(z)) + log|det J_T(z)|, (T(z), log π(T(z))))``.

    Args:
        logdensity: the target's log density of one data-space point ``(D,) -> ()``.
        transport: the current :class:`Transport`.
        flow_static: the static part of the flow.
    """
    forward, _ = transport_maps(transport, flow_static)

    def fn(z):
        x, log_det = forward(z)
        value = logdensity(x)
        return value + log_det, (x, value)

    return fn
