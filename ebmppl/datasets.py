"""Synthetic targets with known answers (numpy only).

A :class:`GaussianMixture` knows its log density, can draw exact samples and
says which mode a point belongs to, so samplers can be scored on mode
weights. ``log_prob`` takes an array namespace (``numpy`` by default,
``jax.numpy`` or ``torch`` for a differentiable energy).

Example:
    >>> import numpy as np
    >>> from ebmppl.datasets import four_mode_mixture
    >>> target = four_mode_mixture(dim=10)
    >>> x = target.sample(1000, np.random.default_rng(0))
    >>> x.shape, target.mode_weights(x).round(1).tolist()
    ((1000, 10), [0.4, 0.3, 0.2, 0.1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GaussianMixture", "bimodal_pair", "four_mode_mixture", "line_of_four"]


@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of isotropic Gaussians.

    Attributes:
        means: shape ``(K, D)``.
        scales: shape ``(K,)``, the standard deviation of each component.
        weights: shape ``(K,)``, summing to one.
    """

    means: np.ndarray
    scales: np.ndarray
    weights: np.ndarray

    def __post_init__(self):
        means = np.atleast_2d(np.asarray(self.means, float))
        scales = np.broadcast_to(np.asarray(self.scales, float), means.shape[:1]).copy()
        weights = np.asarray(self.weights, float)
        if weights.shape != means.shape[:1] or not np.isclose(weights.sum(), 1.0) or (scales <= 0).any():
            raise ValueError("need K weights summing to one and K positive scales for K means")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "weights", weights)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def log_prob(self, x, xp=np):
        """Normalised log density at ``x`` (shape ``(..., D)``), computed with namespace ``xp``
        (``numpy``, ``jax.numpy`` or ``torch``), in the dtype of ``x``."""
        dtype = getattr(x, "dtype", None)
        means, scales = xp.asarray(self.means, dtype=dtype), xp.asarray(self.scales, dtype=dtype)
        sq = ((x[..., None, :] - means) ** 2).sum(-1) / scales**2
        log_norm = -self.dim * (xp.log(scales) + 0.5 * np.log(2 * np.pi))
        terms = xp.asarray(np.log(self.weights), dtype=dtype) + log_norm - 0.5 * sq
        if getattr(xp, "__name__", "") == "torch":
            return xp.logsumexp(terms, -1)
        top = xp.max(terms, axis=-1, keepdims=True)
        return top[..., 0] + xp.log(xp.sum(xp.exp(terms - top), axis=-1))

    def energy(self, x, xp=np):
        """``-log_prob``: the mixture as an energy."""
        return -self.log_prob(x, xp)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` exact draws, shape ``(n, D)``."""
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.means[k] + self.scales[k, None] * rng.standard_normal((n, self.dim))

    def assign(self, x) -> np.ndarray:
        """Index of the component with the highest responsibility at each point."""
        x = np.asarray(x, float)
        sq = np.sum((x[..., None, :] - self.means) ** 2, axis=-1) / self.scales**2
        score = np.log(self.weights) - self.dim * np.log(self.scales) - 0.5 * sq
        return np.argmax(score, axis=-1)

    def mode_weights(self, x) -> np.ndarray:
        """Fraction of the points ``x`` (shape ``(..., D)``) in each mode."""
        k = self.assign(x).ravel()
        return np.bincount(k, minlength=len(self.weights)) / k.size


def four_mode_mixture(dim: int = 10, offset: float = 6.0) -> GaussianMixture:
    """Unit Gaussians at ``(±offset, ±offset, 0, ...)`` with weights 0.4/0.3/0.2/0.1."""
    means = np.zeros((4, dim))
    means[:, :2] = offset * np.array([[1, 1], [-1, 1], [1, -1], [-1, -1]])
    return GaussianMixture(means, np.ones(4), np.array([0.4, 0.3, 0.2, 0.1]))


def line_of_four() -> GaussianMixture:
    """2-D, modes at x = -3, -1, 1, 3 (y = 0), covariance 0.05 I, weights 0.1/0.2/0.3/0.4."""
    means = np.array([[-3.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    return GaussianMixture(means, np.full(4, np.sqrt(0.05)), np.array([0.1, 0.2, 0.3, 0.4]))


def bimodal_pair(heavy: float = 0.8, offset: float = 5.0, scale: float = 1.0, dim: int = 2) -> GaussianMixture:
    """Two modes at ``(±offset, 0, ...)``, the one at ``+offset`` of weight ``heavy``."""
    means = np.zeros((2, dim))
    means[:, 0] = [offset, -offset]
    return GaussianMixture(means, np.full(2, scale), np.array([heavy, 1.0 - heavy]))
