"""The default flows: a spline coupling flow and an inverse autoregressive flow, written for eager PyTorch.

:func:`default_flow` is the independent proposal of ``FlowMCMC`` and the
trainer (a :class:`~ebmppl.pyro.flows.coupling.SplineCouplingFlow`);
:func:`neutra_flow` the transport of ``NeuTraHMC`` (an
:class:`~ebmppl.pyro.flows.autoregressive.AffineAutoregressiveFlow`). Both
start as the identity map. It mirrors :mod:`ebmppl.numpyro.flows.architectures`.

Example:
    >>> from ebmppl.pyro.flows.architectures import default_flow
    >>> default_flow(3)().event_shape
    torch.Size([3])
"""

from __future__ import annotations

from torch import nn

from ebmppl.pyro.flows.autoregressive import AffineAutoregressiveFlow
from ebmppl.pyro.flows.coupling import SplineCouplingFlow

__all__ = ["default_flow", "neutra_flow"]


def default_flow(
    dim: int,
    *,
    num_layers: int = 4,
    nn_width: int = 32,
    nn_depth: int = 1,
    knots: int = 8,
    interval: float = 5.0,
) -> nn.Module:
    """A rational-quadratic spline coupling flow with a standard normal base.

    A :class:`~ebmppl.pyro.flows.coupling.SplineCouplingFlow`: in each layer the
    first ``ceil(D/2)`` coordinates condition monotonic splines of the rest,
    and the groups swap between layers. Both directions take one network
    evaluation per layer, with the log-determinant from the same pass, and
    are exact, so the flow serves as an independent proposal. The splines are
    the identity outside ``[-interval, interval]``, so the tails stay Gaussian
    and unbounded; a fresh flow is the identity map. The hidden weights come
    from torch's global generator (seed it with ``pyro.set_rng_seed``).

    Args:
        dim: dimension of the flow (at least 1).
        num_layers: number of coupling layers (the groups swap between layers).
        nn_width: width of each conditioner's hidden layers.
        nn_depth: number of hidden layers of each conditioner.
        knots: number of spline bins.
        interval: half-width of the splines' domain (whitened units).

    Returns:
        A module: ``flow()`` is a distribution of event shape ``(dim,)``.

    Example:
        >>> import torch
        >>> flow = default_flow(3)
        >>> torch.allclose(flow.from_base(torch.ones(3))[0], torch.ones(3))  # identity at init
        True
    """
    if dim < 1:
        raise ValueError(f"default_flow needs dim >= 1, got {dim}")
    return SplineCouplingFlow(dim, num_layers=num_layers, nn_width=nn_width, nn_depth=nn_depth, knots=knots,
                              bound=interval)


def neutra_flow(dim: int, *, num_layers: int = 4, nn_width: int = 32, nn_depth: int = 1) -> nn.Module:
    """An inverse autoregressive affine flow with a standard normal base: NeuTraHMC's default transport.

    An :class:`~ebmppl.pyro.flows.autoregressive.AffineAutoregressiveFlow`: layer
    ``k`` maps ``z`` to ``x_i = z_i exp(s_i(z_<i)) + t_i(z_<i)`` with a masked
    ReLU network, the order reversing between layers. Funnel-like scales
    ``exp(v / 2)`` and banana-like shifts are in its family; the
    latent-to-data direction is one network pass per layer. A fresh flow is
    the identity map. The hidden weights come from torch's global generator.

    Args:
        dim: dimension of the flow (at least 1).
        num_layers: number of autoregressive layers.
        nn_width: width of each network's hidden layers.
        nn_depth: number of hidden layers of each network.

    Returns:
        A module: ``flow()`` is a distribution of event shape ``(dim,)``.

    Example:
        >>> import torch
        >>> from ebmppl.pyro.flows import neutra_flow
        >>> flow = neutra_flow(3)
        >>> torch.allclose(flow.from_base(torch.ones(3))[0], torch.ones(3))  # identity at init
        True
    """
    return AffineAutoregressiveFlow(dim, num_layers=num_layers, nn_width=nn_width, nn_depth=nn_depth)
