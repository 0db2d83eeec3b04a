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

__all__ = [
    "GaussianMixture",
    "Rings",
    "bimodal_pair",
    "eight_gaussians",
    "four_mode_mixture",
    "line_of_four",
    "load_points",
    "rings",
    "two_modes",
]


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

    @property
    def centres(self) -> np.ndarray:
        """The mode centres, shape ``(K, D)`` (the component means)."""
        return self.means

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


def four_mode_mixture(dim: int = 10, offset: float = 6.0, weights=(0.4, 0.3, 0.2, 0.1)) -> GaussianMixture:
    """Unit Gaussians at ``(±offset, ±offset, 0, ...)``, weights 0.4/0.3/0.2/0.1 by default
    (``weights=(0.25,) * 4`` gives the paper's d-dimensional equal-mode sets)."""
    means = np.zeros((4, dim))
    means[:, :2] = offset * np.array([[1, 1], [-1, 1], [1, -1], [-1, -1]])
    return GaussianMixture(means, np.ones(4), np.asarray(weights, float))


def two_modes() -> GaussianMixture:
    """2-D, ``1/3 N(-1.5·1, 0.05 I) + 2/3 N(1.5·1, 0.1 I)``: the paper's motivating example."""
    means = np.array([[-1.5, -1.5], [1.5, 1.5]])
    return GaussianMixture(means, np.sqrt([0.05, 0.1]), np.array([1.0, 2.0]) / 3.0)


def eight_gaussians(radius: float = 1.0, scale: float = 0.15) -> GaussianMixture:
    """2-D, eight equal Gaussians of standard deviation ``scale`` on a circle of ``radius``."""
    angles = np.arange(8) * np.pi / 4
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(means, np.full(8, scale), np.full(8, 1 / 8))


def line_of_four() -> GaussianMixture:
    """2-D, modes at x = -3, -1, 1, 3 (y = 0), covariance 0.05 I, weights 0.1/0.2/0.3/0.4."""
    means = np.array([[-3.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    return GaussianMixture(means, np.full(4, np.sqrt(0.05)), np.array([0.1, 0.2, 0.3, 0.4]))


def bimodal_pair(heavy: float = 0.8, offset: float = 5.0, scale: float = 1.0, dim: int = 2) -> GaussianMixture:
    """Two modes at ``(±offset, 0, ...)``, the one at ``+offset`` of weight ``heavy``."""
    means = np.zeros((2, dim))
    means[:, 0] = [offset, -offset]
    return GaussianMixture(means, np.full(2, scale), np.array([heavy, 1.0 - heavy]))


@dataclass(frozen=True)
class Rings:
    """2-D concentric rings: the radius follows a mixture of ``N(radii[i], scale²)``, the angle is uniform.

    The density of a point ``x`` with radius ``r = |x|`` is ``p_r(r) / (2π r)``
    (polar change of variables); the radial mixture's mass below 0 is
    neglected (under 1e-11 for the default rings).

    Attributes:
        radii: shape ``(K,)``, the centre radius of each ring.
        scale: the radial standard deviation.
        weights: shape ``(K,)``, summing to one.

    Example:
        >>> import numpy as np
        >>> from ebmppl.datasets import rings
        >>> x = rings().sample(4000, np.random.default_rng(0))
        >>> bool(np.abs(rings().mode_weights(x) - 0.25).max() < 0.03)  # four equal rings
        True
    """

    radii: np.ndarray
    scale: float
    weights: np.ndarray

    def __post_init__(self):
        radii, weights = np.asarray(self.radii, float), np.asarray(self.weights, float)
        if weights.shape != radii.shape or not np.isclose(weights.sum(), 1.0) or self.scale <= 0:
            raise ValueError("need K weights summing to one for K radii, and a positive scale")
        object.__setattr__(self, "radii", radii)
        object.__setattr__(self, "weights", weights)

    dim = 2

    @property
    def centres(self) -> np.ndarray:
        """The mode centres, each ring's radius, shape ``(K,)``."""
        return self.radii

    def log_prob(self, x, xp=np):
        """Normalised log density at ``x`` (shape ``(..., 2)``), computed with namespace ``xp``."""
        dtype = getattr(x, "dtype", None)
        r = xp.sqrt((x**2).sum(-1))
        radii = xp.asarray(self.radii, dtype=dtype)
        terms = (
            xp.asarray(np.log(self.weights), dtype=dtype)
            - 0.5 * ((r[..., None] - radii) / self.scale) ** 2
            - np.log(self.scale * np.sqrt(2 * np.pi))
        )
        if getattr(xp, "__name__", "") == "torch":
            log_radial = xp.logsumexp(terms, -1)
        else:
            top = xp.max(terms, axis=-1, keepdims=True)
            log_radial = top[..., 0] + xp.log(xp.sum(xp.exp(terms - top), axis=-1))
        return log_radial - xp.log(2 * np.pi * r)

    def energy(self, x, xp=np):
        """``-log_prob``: the rings as an energy."""
        return -self.log_prob(x, xp)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` exact draws, shape ``(n, 2)``."""
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        r = np.abs(self.radii[k] + self.scale * rng.standard_normal(n))
        angle = rng.uniform(0.0, 2 * np.pi, n)
        return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=-1)

    def assign(self, x) -> np.ndarray:
        """Index of the ring with the highest responsibility at each point."""
        r = np.linalg.norm(np.asarray(x, float), axis=-1)
        score = np.log(self.weights) - 0.5 * ((r[..., None] - self.radii) / self.scale) ** 2
        return np.argmax(score, axis=-1)

    def mode_weights(self, x) -> np.ndarray:
        """Fraction of the points ``x`` (shape ``(..., 2)``) on each ring."""
        k = self.assign(x).ravel()
        return np.bincount(k, minlength=len(self.weights)) / k.size


def rings(scale: float = 0.15) -> Rings:
    """The paper's rings: four equal rings of radius 1, 2, 3, 4 and radial std ``scale``."""
    return Rings(np.arange(1.0, 5.0), scale, np.full(4, 0.25))


def load_points(path, dim: int | None = None) -> np.ndarray:
    """Load data points from a ``.npy`` or ``.csv`` file as a float array ``(n, D)``.

    A ``.csv`` file has one point per row, comma-separated; a first row that is
    not numeric is taken as a header.

    Args:
        path: the file.
        dim: the expected dimension ``D`` (checked when given).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: another extension, an unreadable or empty file, not one
            point per row, rows with NaN or infinite values (their indices are
            named), or a dimension other than ``dim``.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "points.csv"
        >>> _ = path.write_text("x,y\\n1.0,2.0\\n3.0,4.0\\n")
        >>> load_points(path, dim=2)
        array([[1., 2.],
               [3., 4.]])
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            points = np.load(path, allow_pickle=False)
        except (OSError, EOFError, ValueError) as err:  # truncated, foreign, or pickled objects
            raise ValueError(f"data file {str(path)!r} could not be read as a .npy array: {err}") from err
    elif suffix == ".csv":
        points, header_lines = _load_csv(path)
    else:
        raise ValueError(f"data file {str(path)!r}: expected a .npy or .csv file, got {suffix or 'no extension'!r}")
    points = np.asarray(points)
    if points.dtype.kind not in "fiu":
        raise ValueError(f"data file {str(path)!r} holds {points.dtype} values, not numbers")
    points = points.astype(float)
    if points.ndim == 1:
        points = points[:, None]
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"data file {str(path)!r}: expected one point per row, got an array of shape {points.shape}")
    bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
    if bad.size:
        # a CSV's rows are named by their line in the file (from 1, the header counted), an array's by index
        where = bad + header_lines + 1 if suffix == ".csv" else bad
        shown = ", ".join(str(i) for i in where[:5]) + (", ..." if bad.size > 5 else "")
        label = "line" if suffix == ".csv" else "row"
        raise ValueError(f"data file {str(path)!r}: {bad.size} {'row' if bad.size == 1 else 'rows'} with NaN "
                         f"or infinite values ({label}{'' if bad.size == 1 else 's'} {shown})")
    if dim is not None and points.shape[1] != dim:
        raise ValueError(f"data file {str(path)!r}: points have dimension {points.shape[1]}, expected {dim}")
    return points


def _load_csv(path) -> tuple[np.ndarray, int]:
    """The table of a CSV file and the number of header lines before it (0 or 1)."""
    with open(path) as handle:
        lines = [line for line in handle if line.strip()]
    try:
        [float(field) for field in lines[0].strip().split(",") if field.strip()] if lines else None
        skip = 0
    except ValueError:
        skip = 1  # a header
    if len(lines) <= skip:
        raise ValueError(f"data file {str(path)!r} holds no points" + (" (only a header)" if skip else ""))
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=skip), skip
    except ValueError as err:
        raise ValueError(f"data file {str(path)!r} is not a numeric CSV table: {err}") from err
