"""An inverse autoregressive affine flow written for HMC in its latent space (eager PyTorch).

Layer ``k`` maps a base point ``z`` to ``x_i = z_i exp(s_i(z_<i)) + t_i(z_<i)``
with ``(s, t)`` a masked ReLU network (MADE), then reverses the order of the
coordinates, so consecutive layers condition in opposite orders. The
base-to-data direction, which neural-transport HMC evaluates at every
leapfrog step, costs one network pass per layer; the inverse (the density of
a data point) takes ``D`` passes per layer. ``s`` is softly bounded,
``|s| < 5``, and the networks' last layers start at zero: a fresh flow is the
identity map. It mirrors :func:`ebmppl.numpyro.flows.neutra_flow`.

Example:
    >>> import torch
    >>> from ebmppl.pyro.flows.autoregressive import AffineAutoregressiveFlow
    >>> z = torch.randn(5, 3)
    >>> x, log_det = AffineAutoregressiveFlow(3).from_base(z)  # one pass per layer
    >>> torch.equal(x, z), torch.equal(log_det, torch.zeros(5))  # a fresh flow is the identity map
    (True, True)
"""

from __future__ import annotations

import torch
from torch import nn

from ebmppl.pyro.flows.coupling import FlowDistribution

__all__ = ["AffineAutoregressiveFlow", "LOG_SCALE_LIMIT"]

LOG_SCALE_LIMIT = 5.0  # |log scale| of one layer stays below this (soft bound)


class _MaskedLinear(nn.Linear):
    def __init__(self, mask: torch.Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class _AutoregressiveAffine(nn.Module):
    """One layer: ``x = z exp(s(z)) + t(z)``, output ``i`` depending on inputs before ``i``."""

    def __init__(self, dim: int, nn_width: int, nn_depth: int):
        super().__init__()
        self.dim = dim
        degree_in = torch.arange(1, dim + 1)
        degrees = [degree_in] + [torch.arange(nn_width) % max(dim - 1, 1) + 1 for _ in range(nn_depth)]
        layers = []
        for before, after in zip(degrees[:-1], degrees[1:]):
            layers += [_MaskedLinear(after[:, None] >= before[None, :]), nn.ReLU()]
        degree_out = degree_in.repeat(2)  # (t_1..t_D, s_1..s_D)
        last = _MaskedLinear(degree_out[:, None] > degrees[-1][None, :])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def _shift_and_log_scale(self, z):
        shift, raw = self.net(z).split(self.dim, -1)
        return shift, LOG_SCALE_LIMIT * torch.tanh(raw / LOG_SCALE_LIMIT)

    def from_base(self, z):
        """``(x, log|det dx/dz|)``: one network pass."""
        shift, log_scale = self._shift_and_log_scale(z)
        return z * log_scale.exp() + shift, log_scale.sum(-1)

    def to_base(self, x):
        """``(z, log|det dz/dx|)``: ``D`` passes, coordinate ``i`` exact after pass ``i``."""
        z = torch.zeros_like(x)
        for _ in range(self.dim):
            shift, log_scale = self._shift_and_log_scale(z)
            z = (x - shift) * (-log_scale).exp()
        return z, -log_scale.sum(-1)


class AffineAutoregressiveFlow(nn.Module):
    """Inverse autoregressive affine layers on a standard normal base (see the module docstring).

    Calling the module returns its distribution, with ``log_prob``,
    ``sample``, ``rsample`` and ``rsample_and_log_prob``.

    Args:
        dim: dimension (at least 1).
        num_layers: autoregressive layers (the order reverses between layers).
        nn_width: width of each network's hidden layers.
        nn_depth: hidden layers per network.

    Example:
        >>> flow = AffineAutoregressiveFlow(2, num_layers=2)
        >>> flow().sample((4,)).shape
        torch.Size([4, 2])
    """

    def __init__(self, dim: int, num_layers: int = 4, nn_width: int = 32, nn_depth: int = 1):
        super().__init__()
        if dim < 1:
            raise ValueError(f"AffineAutoregressiveFlow needs dim >= 1, got {dim}")
        self.dim = dim
        self.layers = nn.ModuleList([_AutoregressiveAffine(dim, nn_width, nn_depth) for _ in range(num_layers)])
        self.register_buffer("reference", torch.zeros(()), persistent=False)  # dtype and device

    def from_base(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, log|det dz/dx|)`` at ``x``, the data point of base point ``z`` (one pass per layer)."""
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for layer in self.layers:
            z, ladj = layer.from_base(z)
            z = z.flip(-1)
            log_det = log_det - ladj
        return z, log_det

    def to_base(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log|det dz/dx|)`` for data ``x`` of shape ``(…, D)``."""
        log_det = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for layer in reversed(self.layers):
            x, ladj = layer.to_base(x.flip(-1))
            log_det = log_det + ladj
        return x, log_det

    def forward(self) -> FlowDistribution:
        return FlowDistribution(self)
