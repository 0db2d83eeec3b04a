"""What adapts a flow to what the samplers need: its maps to and from the base, and the whitened proposal density.

A flow is a module whose call returns a torch distribution with
``sample``/``rsample`` and ``log_prob`` (ebmppl's own flows, zuko flows); a
Pyro ``TransformedDistribution`` of ``TransformModule`` s is wrapped into one
by :func:`as_flow_module`. It mirrors :mod:`ebmppl.numpyro.flows.protocol`.

Example: the density of a proposal's own draws, the flow scaled by a whitening.
    >>> import torch
    >>> from ebmppl.pyro.flows import default_flow, fit_diagonal_whitening
    >>> from ebmppl.pyro.flows.protocol import proposal_log_prob, proposal_sample_and_log_prob
    >>> whitening, flow = fit_diagonal_whitening(torch.tensor([[0.0, 1.0], [4.0, 3.0]])), default_flow(2)
    >>> x, log_q = proposal_sample_and_log_prob(flow, whitening, (3,))
    >>> torch.allclose(proposal_log_prob(flow, whitening, x), log_q, atol=1e-4)
    True
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution, Transform, TransformedDistribution

from ebmppl.pyro.flows.whitening import Whitening

__all__ = ["as_flow_module", "base_log_prob", "base_maps", "defensive_proposal", "proposal_log_prob",
           "proposal_sample_and_log_prob", "wide_gaussian_log_prob"]


def base_maps(flow: nn.Module):
    """The two maps of a flow between its base (latent) space and data.

    Returns:
        ``(forward, inverse)``: ``forward(z) = (x, log|det dx/dz|)``,
        differentiable in ``z`` and the flow's parameters, and
        ``inverse(x) = z``. For ebmppl's flows, zuko flows and Pyro
        ``TransformedDistribution`` s.

    Example:
        >>> import torch
        >>> from ebmppl.pyro.flows import neutra_flow
        >>> forward, inverse = base_maps(neutra_flow(2))
        >>> x, log_det = forward(torch.ones(3, 2))  # a fresh flow is the identity
        >>> bool((x == 1).all() and (log_det == 0).all() and (inverse(x) == 1).all())
        True
    """
    if hasattr(flow, "from_base") and hasattr(flow, "to_base"):
        def forward(z):
            x, log_det = flow.from_base(z)
            return x, -log_det

        return forward, lambda x: flow.to_base(x)[0]
    distribution = flow()
    if isinstance(distribution, TransformedDistribution):  # transforms map base to data
        def forward(z):
            transform = torch.distributions.ComposeTransform(flow().transforms)
            x = transform(z)
            return x, transform.log_abs_det_jacobian(z, x)

        def inverse(x):
            return torch.distributions.ComposeTransform(flow().transforms).inv(x)

        return forward, inverse
    if hasattr(distribution, "transform"):  # zuko: transform maps data to base
        def forward(z):
            return flow().transform.inv.call_and_ladj(z)

        return forward, lambda x: flow().transform(x)
    raise ValueError(f"flow returned a {type(distribution).__name__}, not a transformed distribution")


def base_log_prob(flow: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The log density ``log ρ(z)`` of the flow's base (latent) distribution.

    Example:
        >>> import torch
        >>> from ebmppl.pyro.flows import neutra_flow
        >>> base_log_prob(neutra_flow(2), torch.zeros(1, 2))  # log N(0; 0, I) in 2-D
        tensor([-1.8379])
    """
    distribution = flow()
    if hasattr(distribution, "base_log_prob"):  # ebmppl's flows: a standard normal
        return distribution.base_log_prob(z)
    base = getattr(distribution, "base_dist", None) or getattr(distribution, "base", None)
    if base is None:
        raise ValueError(f"flow returned a {type(distribution).__name__}, which has no base distribution")
    return base.log_prob(z)


class _TransformedFlow(nn.Module):
    """A Pyro/torch ``TransformedDistribution`` as a module returning it.

    Trainable parameters are those of its ``TransformModule`` s; the caches of
    its transforms are cleared on every call, since a cached inverse is stale
    once an optimizer step has changed the parameters.
    """

    def __init__(self, distribution: TransformedDistribution):
        super().__init__()
        self.distribution = distribution
        self.transforms = nn.ModuleList([t for t in distribution.transforms if isinstance(t, nn.Module)])

    def forward(self) -> Distribution:
        for transform in self.distribution.transforms:
            _clear_cache(transform)
        return self.distribution


def _clear_cache(transform: Transform) -> None:
    if hasattr(transform, "_cached_x_y"):
        transform._cached_x_y = None, None
    for part in getattr(transform, "parts", ()):
        _clear_cache(part)


def as_flow_module(flow) -> nn.Module:
    """The module form of a flow: a zuko flow as is, a ``TransformedDistribution`` wrapped.

    Raises:
        TypeError: neither a module nor a ``TransformedDistribution``.

    Example:
        >>> import pyro.distributions as dist, torch
        >>> import pyro.distributions.transforms as T
        >>> base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
        >>> flow = as_flow_module(dist.TransformedDistribution(base, [T.spline_coupling(2)]))
        >>> flow().sample((4,)).shape, len(list(flow.parameters())) > 0
        (torch.Size([4, 2]), True)
    """
    if isinstance(flow, TransformedDistribution):
        return _TransformedFlow(flow)
    if isinstance(flow, nn.Module):
        return flow
    raise TypeError(
        "flow must be a zuko flow (a module whose call returns a distribution) or a "
        f"torch/Pyro TransformedDistribution, got {type(flow).__name__}"
    )


def _whiten(whitening: Whitening, x: torch.Tensor) -> torch.Tensor:
    return (x - whitening.loc) @ whitening.inverse.T


def proposal_log_prob(flow: nn.Module, whitening: Whitening, x: torch.Tensor) -> torch.Tensor:
    """Log density of the whitened flow at ``x`` (shape ``(..., D)``).

    Example:
        >>> import torch
        >>> from ebmppl.pyro.flows import default_flow, identity_whitening
        >>> flow = default_flow(2)  # fresh: a standard normal
        >>> round(float(proposal_log_prob(flow, identity_whitening(2), torch.zeros(2)).detach()), 4)
        -1.8379
    """
    return flow().log_prob(_whiten(whitening, x)) - whitening.log_det


def proposal_sample_and_log_prob(
    flow: nn.Module, whitening: Whitening, sample_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws of the whitened flow, shape ``sample_shape + (D,)``, with their log density.

    Example:
        >>> from ebmppl.pyro.flows import default_flow, identity_whitening
        >>> x, log_q = proposal_sample_and_log_prob(default_flow(2), identity_whitening(2), (4,))
        >>> x.shape, log_q.shape
        (torch.Size([4, 2]), torch.Size([4]))
    """
    distribution = flow()
    if hasattr(distribution, "rsample_and_log_prob"):
        u, log_q = distribution.rsample_and_log_prob(torch.Size(sample_shape))
    else:
        u = distribution.sample(torch.Size(sample_shape))
        log_q = distribution.log_prob(u)
    return whitening.loc + u @ whitening.matrix.T, log_q - whitening.log_det


def wide_gaussian_log_prob(whitening: Whitening, x: torch.Tensor) -> torch.Tensor:
    """``log N(x; loc, (2M)(2M)ᵀ)``: a Gaussian twice as wide as the whitening ``(loc, M)``.

    Example:
        >>> import torch
        >>> from ebmppl.pyro.flows import identity_whitening
        >>> round(float(wide_gaussian_log_prob(identity_whitening(1), torch.zeros(1))), 4)  # log N(0; 0, 2²)
        -1.6121
    """
    u = 0.5 * (x - whitening.loc) @ whitening.inverse.T
    dim = u.shape[-1]
    return -0.5 * (u**2).sum(-1) - 0.5 * dim * math.log(2 * math.pi) - whitening.log_det - dim * math.log(2.0)


def defensive_proposal(flow: nn.Module, whitening: Whitening, share: float):
    """The mixture ``(1 - share) q + share g`` of the whitened flow ``q`` and the wide Gaussian ``g``.

    ``g`` (:func:`wide_gaussian_log_prob`) has the whitening's centre and twice
    its spread: where the flow has too little mass (a mode it was never fitted
    on), the mixture still has some, so a proposal can land there and an
    importance weight stays bounded there. Randomness comes from torch's
    generator.

    Args:
        flow: the flow module, on whitened coordinates.
        whitening: the :class:`Whitening` to data coordinates.
        share: the mixture weight of ``g``, in ``[0, 1)``.

    Returns:
        ``(sample_and_log_prob, log_prob)``: ``shape -> (x, log m(x))``, each
        draw from ``g`` with probability ``share``, and the batched ``log m``
        of the mixture ``m``.

    Example:
        >>> import torch
        >>> from ebmppl.pyro.flows import default_flow, identity_whitening
        >>> sample, log_prob = defensive_proposal(default_flow(2), identity_whitening(2), 0.1)
        >>> with torch.no_grad():
        ...     x, log_m = sample((4,))
        ...     bool(torch.allclose(log_m, log_prob(x), atol=1e-5))
        True
    """

    def mixture(x, log_q):
        return torch.logaddexp(math.log1p(-share) + log_q, math.log(share) + wide_gaussian_log_prob(whitening, x))

    def sample_and_log_prob(sample_shape):
        x_flow, log_q = proposal_sample_and_log_prob(flow, whitening, sample_shape)
        x_wide = whitening.loc + 2.0 * torch.randn_like(x_flow) @ whitening.matrix.T
        wide = torch.rand(x_flow.shape[:-1], device=x_flow.device) < share
        x = torch.where(wide[..., None], x_wide, x_flow)
        log_q = log_q.clone()
        log_q[wide] = proposal_log_prob(flow, whitening, x[wide])  # the inverse pass on the wide draws only
        return x, mixture(x, log_q)

    def log_prob(x):
        return mixture(x, proposal_log_prob(flow, whitening, x))

    return sample_and_log_prob, log_prob
