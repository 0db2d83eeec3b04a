"""Affine whitening ``x = loc + matrix @ u`` between data and the coordinates a flow works in.

A proposal is a flow acting on *whitened* coordinates ``u``, composed with an
affine map fitted to the chains. :func:`fit_diagonal_whitening` only
standardises each coordinate: FlowMCMC's and NeuTraHMC's fits use it, since a
rotation mixes coordinates that the target keeps independent (Many-Well's
wells) wherever the covariance's eigenvalues are close. :func:`fit_whitening`
rotates onto the principal components, interleaved between a coupling
layer's halves, for flows of one's own on strongly correlated points.
It mirrors :mod:`ebmppl.pyro.flows.whitening`.

Example:
    >>> import jax.numpy as jnp
    >>> from ebmppl.numpyro.flows.whitening import fit_whitening
    >>> w = fit_whitening(jnp.array([[0.0, 0.0], [2.0, 1.0], [4.0, 5.0]]))
    >>> w.loc.tolist()
    [2.0, 2.0]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ebmppl.pca_order import interleaved_slots

__all__ = ["Whitening", "fit_diagonal_whitening", "fit_whitening", "identity_whitening"]


class Whitening(NamedTuple):
    """Affine map ``x = loc + matrix @ u`` between data and whitened coordinates.

    Attributes:
        loc: shape ``(D,)``, the mean of the fitted points.
        matrix: shape ``(D, D)``, maps whitened ``u`` to centred ``x``.
        inverse: shape ``(D, D)``, the inverse of ``matrix``.
        log_det: ``log|det matrix|``, a scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> w = Whitening(jnp.ones(2), 2.0 * jnp.eye(2), 0.5 * jnp.eye(2), jnp.log(4.0))
        >>> (w.loc + w.matrix @ jnp.array([1.0, -1.0])).tolist()
        [3.0, -1.0]
    """

    loc: jax.Array
    matrix: jax.Array
    inverse: jax.Array
    log_det: jax.Array


def identity_whitening(dim: int, dtype=jnp.float32) -> Whitening:
    """The whitening that leaves coordinates unchanged.

    Args:
        dim: the dimension ``D``.
        dtype: the arrays' floating dtype.

    Returns:
        ``Whitening(zeros(D), I, I, 0)``.

    Example:
        >>> w = identity_whitening(2)
        >>> w.matrix.tolist(), float(w.log_det)
        ([[1.0, 0.0], [0.0, 1.0]], 0.0)
    """
    eye = jnp.eye(dim, dtype=dtype)
    return Whitening(jnp.zeros(dim, dtype), eye, eye, jnp.zeros((), dtype))


def _interleaved_order(dim: int) -> jax.Array:
    """Slots of the principal components: flowjax's couplings split ``[0, dim//2)`` from the rest."""
    return jnp.asarray(interleaved_slots(dim, first_size=dim // 2))


def fit_whitening(points: jax.Array, jitter: float = 1e-6) -> Whitening:
    """PCA whitening of ``points`` (shape ``(n, D)``), components interleaved.

    Args:
        points: the chain states to standardise.
        jitter: added to the covariance's eigenvalues, relative to their mean.

    Returns:
        The :class:`Whitening` whose whitened points have mean 0, covariance I.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> points = jax.random.normal(jax.random.key(0), (1000, 2)) @ jnp.array([[3.0, 0.0], [1.0, 0.5]])
        >>> w = fit_whitening(points)
        >>> u = (points - w.loc) @ w.inverse.T
        >>> bool(jnp.allclose(jnp.cov(u, rowvar=False), jnp.eye(2), atol=1e-3))
        True
    """
    dim = points.shape[-1]
    loc = points.mean(0)
    cov = jnp.atleast_2d(jnp.cov(points, rowvar=False))
    eigvals, eigvecs = jnp.linalg.eigh(cov)
    eigvals = jnp.clip(eigvals, 0.0) + jitter * (jnp.mean(eigvals) + 1e-12)
    order = jnp.argsort(-eigvals)
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    # Column k of `matrix` is the slot of component k.
    slots = _interleaved_order(dim)
    scale = jnp.sqrt(eigvals)
    matrix = jnp.zeros((dim, dim)).at[:, slots].set(eigvecs * scale)
    inverse = jnp.zeros((dim, dim)).at[slots, :].set((eigvecs / scale).T)
    return Whitening(loc, matrix, inverse, jnp.sum(jnp.log(scale)))


def fit_diagonal_whitening(points: jax.Array, jitter: float = 1e-6, robust: bool = False) -> Whitening:
    """Standardisation of ``points`` (shape ``(n, D)``): mean 0 and unit variance per coordinate.

    Unlike :func:`fit_whitening` it does not rotate, so the coordinates keep
    the model's order, which an autoregressive flow follows. With ``robust``
    the location is the median and the scale the MAD (times 1.4826, the
    standard deviation for a normal; the standard deviation where the MAD is
    zero), which a minority of far-out points does not move.

    Example:
        >>> import jax.numpy as jnp
        >>> from ebmppl.numpyro.flows import fit_diagonal_whitening
        >>> w = fit_diagonal_whitening(jnp.array([[0.0, 10.0], [2.0, 30.0]]))
        >>> w.loc.tolist(), jnp.diag(w.matrix).round(3).tolist()
        ([1.0, 20.0], [1.0, 10.0])
        >>> far_out = jnp.array([[0.0], [1.0], [2.0], [3.0], [1000.0]])
        >>> w = fit_diagonal_whitening(far_out, robust=True)
        >>> float(w.loc[0]), round(float(w.matrix[0, 0]), 3)
        (2.0, 1.483)
    """
    if robust:
        loc = jnp.median(points, 0)
        mad = 1.4826 * jnp.median(jnp.abs(points - loc), 0)
        var = jnp.where(mad > 0, mad, points.std(0)) ** 2
    else:
        loc = points.mean(0)
        var = points.var(0)
    scale = jnp.sqrt(var + jitter * (jnp.mean(var) + 1e-12))
    return Whitening(loc, jnp.diag(scale), jnp.diag(1.0 / scale), jnp.sum(jnp.log(scale)))
