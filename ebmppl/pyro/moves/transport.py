"""The transport of neural-transport moves: ``x = T(z) = loc + M g(z)`` and the latent log density (torch).

``g`` is a flow's base-to-data map and ``(loc, M)`` a whitening; HMC in the
latent space moves on ``log π(T(z)) + log|det J_T(z)|``, which is close to a
standard normal once the flow fits the target. It mirrors
:mod:`ebmppl.numpyro.moves.transport`.

Example:
    >>> import torch
    >>> from ebmppl.pyro.flows import identity_whitening, neutra_flow
    >>> from ebmppl.pyro.moves.transport import Transport, latent_logdensity
    >>> fn = latent_logdensity(lambda x: -0.5 * (x**2).sum(-1), Transport(neutra_flow(2), identity_whitening(2)))
    >>> fn(torch.ones(1, 2))[0].tolist()  # a fresh flow is the identity: the target itself
    [-1.0]
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from ebmppl.pyro.flows.protocol import base_maps

__all__ = ["Transport", "latent_logdensity", "transport_maps"]


class Transport(NamedTuple):
    """The map from latent to data space: a flow (frozen) and the standardisation.

    Attributes:
        flow: the flow module.
        whitening: the affine map (a ``Whitening``) from the flow's output to data coordinates.
    """

    flow: nn.Module
    whitening: Any


def transport_maps(transport: Transport) -> tuple[Callable, Callable]:
    """``(forward, inverse)`` of a batch: ``z -> (x, log|det J_T(z)|)`` and ``x -> z``.

    Example:
        >>> import torch
        >>> from ebmppl.pyro.flows import identity_whitening, neutra_flow
        >>> forward, inverse = transport_maps(Transport(neutra_flow(2), identity_whitening(2)))
        >>> inverse(forward(torch.ones(1, 2))[0]).tolist()
        [[1.0, 1.0]]
    """
    base_forward, base_inverse = base_maps(transport.flow)
    w = transport.whitening

    def forward(z):
        u, log_det = base_forward(z)
        return w.loc + u @ w.matrix.T, log_det + w.log_det

    def inverse(x):
        return base_inverse((x - w.loc) @ w.inverse.T)

    return forward, inverse


def latent_logdensity(logdensity: Callable, transport: Transport) -> Callable:
    """The batched latent log density ``z -> (log π(T(z)) + log|det J_T(z)|, T(z), log π(T(z)))``.

    Args:
        logdensity: the target's differentiable log density ``(n, D) -> (n,)``.
        transport: the :class:`Transport`.
    """
    base_forward, _ = base_maps(transport.flow)
    w = transport.whitening

    def fn(z: torch.Tensor):
        u, log_det = base_forward(z)
        x = w.loc + u @ w.matrix.T
        value = logdensity(x)
        return value + log_det + w.log_det, x, value

    return fn
