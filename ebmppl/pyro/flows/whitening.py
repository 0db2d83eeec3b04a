"""Affine whitening ``x = loc + matrix @ u`` between data and the coordinates a flow works in (torch).

A proposal is a flow acting on *whitened* coordinates ``u``, composed with an
affine map fitted to the chains. :func:`fit_diagonal_whitening` only
standardises each coordinate: FlowMCMC's and NeuTraHMC's fits use it, since a
rotation mixes coordinates that the target keeps independent (Many-Well's
wells) wherever the covariance's eigenvalues are close. :func:`fit_whitening`
rotates onto the principal components, interleaved between a coupling
layer's halves, for flows of one's own on strongly correlated points.
It mirrors :mod:`ebmppl.numpyro.flows.whitening`.

Example:
    >>> import torch
    >>> from ebmppl.pyro.flows.whitening import fit_whitening
    >>> w = fit_whitening(torch.tensor([[0.0, 0.0], [2.0, 1.0], [4.0, 5.0]]))
    >>> w.loc.tolist()
    [2.0, 2.0]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ebmppl.pca_order import interleaved_slots

__all__ = ["Whitening", "fit_diagonal_whitening", "fit_whitening", "identity_whitening"]


class Whitening(NamedTuple):
    """Affine map ``x = loc + matrix @ u`` between data and whitened coordinates.

    Attributes:
        loc: shape ``(D,)``, the mean of the fitted points.
        matrix: shape ``(D, D)``, maps whitened ``u`` to centred ``x``.
        inverse: shape ``(D, D)``, the inverse of ``matrix``.
        log_det: ``log|det matrix|``, a scalar tensor.

    Example:
        >>> import math, torch
        >>> w = Whitening(torch.ones(2), 2.0 * torch.eye(2), 0.5 * torch.eye(2), torch.tensor(math.log(4.0)))
        >>> (w.loc + w.matrix @ torch.tensor([1.0, -1.0])).tolist()
        [3.0, -1.0]
    """

    loc: torch.Tensor
    matrix: torch.Tensor
    inverse: torch.Tensor
    log_det: torch.Tensor


def identity_whitening(dim: int, dtype: torch.dtype = torch.float32, device=None) -> Whitening:
    """The whitening that leaves coordinates unchanged.

    Args:
        dim: the dimension ``D``.
        dtype: the tensors' floating dtype.
        device: the tensors' device (``None``: torch's default).

    Returns:
        ``Whitening(zeros(D), I, I, 0)``.

    Example:
        >>> w = identity_whitening(2)
        >>> w.matrix.tolist(), float(w.log_det)
        ([[1.0, 0.0], [0.0, 1.0]], 0.0)
    """
    eye = torch.eye(dim, dtype=dtype, device=device)
    zeros = torch.zeros(dim, dtype=dtype, device=device)
    return Whitening(zeros, eye, eye, torch.zeros((), dtype=dtype, device=device))


def _interleaved_order(dim: int) -> torch.Tensor:
    """Slots of the principal components: the coupling layers split ``[0, ceil(D/2))`` from the rest."""
    return torch.tensor(interleaved_slots(dim, first_size=math.ceil(dim / 2)))


def fit_whitening(points: torch.Tensor, jitter: float = 1e-6) -> Whitening:
    """PCA whitening of ``points`` (shape ``(n, D)``), components interleaved.

    Args:
        points: the chain states to standardise.
        jitter: added to the covariance's eigenvalues, relative to their mean.

    Returns:
        The :class:`Whitening` whose whitened points have mean 0, covariance I.

    Example:
        >>> import torch
        >>> points = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0)) @ torch.tensor(
        ...     [[3.0, 0.0], [1.0, 0.5]])
        >>> w = fit_whitening(points)
        >>> u = (points - w.loc) @ w.inverse.T
        >>> torch.allclose(torch.cov(u.T), torch.eye(2), atol=1e-3)
        True
    """
    points = points.detach()
    dim = points.shape[-1]
    loc = points.mean(0)
    centred = points - loc
    cov = (centred.T @ centred / max(points.shape[0] - 1, 1)).double()
    eigvals, eigvecs = torch.linalg.eigh(cov)
    eigvals = eigvals.clamp(min=0.0) + jitter * (eigvals.mean() + 1e-12)
    order = torch.argsort(-eigvals)
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    slots = _interleaved_order(dim).to(cov.device)
    scale = eigvals.sqrt()
    matrix = torch.zeros(dim, dim, dtype=cov.dtype, device=cov.device)
    matrix[:, slots] = eigvecs * scale
    inverse = torch.zeros(dim, dim, dtype=cov.dtype, device=cov.device)
    inverse[slots, :] = (eigvecs / scale).T
    dtype = points.dtype
    return Whitening(loc, matrix.to(dtype), inverse.to(dtype), scale.log().sum().to(dtype))


def fit_diagonal_whitening(points: torch.Tensor, jitter: float = 1e-6, robust: bool = False) -> Whitening:
    """Standardisation of ``points`` (shape ``(n, D)``): mean 0 and unit variance per coordinate.

    Unlike :func:`fit_whitening` it does not rotate, so the coordinates keep
    the model's order, which an autoregressive flow follows. With ``robust``
    the location is the median and the scale the MAD (times 1.4826, the
    standard deviation for a normal; the standard deviation where the MAD is
    zero), which a minority of far-out points does not move.

    Example:
        >>> import torch
        >>> w = fit_diagonal_whitening(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
        >>> w.loc.tolist(), torch.diag(w.matrix).round(decimals=3).tolist()
        ([1.0, 20.0], [1.0, 10.0])
        >>> w = fit_diagonal_whitening(torch.tensor([[0.0], [1.0], [2.0], [3.0], [1000.0]]), robust=True)
        >>> float(w.loc[0]), round(float(w.matrix[0, 0]), 3)
        (2.0, 1.483)
    """
    points = points.detach()
    if robust:
        loc = points.median(0).values
        mad = 1.4826 * (points - loc).abs().median(0).values
        var = torch.where(mad > 0, mad, points.std(0, unbiased=False)) ** 2
    else:
        loc = points.mean(0)
        var = points.var(0, unbiased=False)
    scale = (var + jitter * (var.mean() + 1e-12)).sqrt()
    return Whitening(loc, torch.diag(scale), torch.diag(1.0 / scale), scale.log().sum())
