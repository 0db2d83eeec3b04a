"""The field's standard multimodal targets, with exact draws, known ``log Z`` and mode labels.

- ``gmm40``: 2-D, 40 equal-weight unit-variance Gaussians (FAB, Midgley et
  al. ICLR 2023; fab-jax ``GMM(dim=2, n_mixes=40, loc_scaling=40)``). The
  means are fab-jax's ``jax.random.uniform(PRNGKey(0), (40, 2), -1, 1) * 40``
  as JAX drew them before 0.5 (``jax_threefry_partitionable=False``; current
  JAX draws other numbers), hard-coded below to 4 decimals. ``log Z = 0``.
  Some components overlap (the closest pair is 1.8 apart), so a mode is the
  component of highest responsibility and its weight is not exactly 1/40:
  the true weights are those of 4,000,000 exact draws (MC error < 1e-4).
- ``manywell32``: 16 independent copies of the 2-D double well
  ``E(x1, x2) = x1⁴ - 6 x1² - 0.5 x1 + 0.5 x2²`` (FAB), 2¹⁶ modes;
  ``log Z = 16 (ln ∫ exp(-x⁴ + 6x² + 0.5x) dx + ½ ln 2π) = 164.69568`` by
  quadrature (scipy ``quad``, relative error 1e-13); the deep side
  ``x1 > 0`` of each well holds 0.844307 of its mass.
- ``funnel10``: Neal's funnel, ``v ~ N(0, 3²)``, ``x_1..9 | v ~ N(0, e^v)``;
  ``log Z = 0``; the neck ``P(v < -6) = Φ(-2) = 0.02275``.
- ``mos50``: 50-D mixture of 10 equal-weight Student-t modes, each a product
  of 50 independent Student-t (2 degrees of freedom, unit scale) (Beyond
  ELBOs, Blessing et al. ICML 2024, ``StudentTMixtureModel(num_components=10,
  dim=50)``); means ``jax.random.uniform(PRNGKey(0), (10, 50), -10, 10)``
  under the legacy PRNG, in ``data/mos50_means.txt``. ``log Z = 0``.
- ``mixture10``: ebmppl's 10-D 4-mode mixture (unit Gaussians at
  ``(±6, ±6, 0, ...)``, weights 0.4/0.3/0.2/0.1; ``ebmppl.datasets.four_mode_mixture``).

Each target also names the broad distribution every sampler starts from
(``prior``, as :mod:`peers` takes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, logsumexp

from ebmppl.datasets import four_mode_mixture

__all__ = ["TARGETS", "Target", "torch_log_density"]

GMM40_MEANS = np.array([
    [-15.7582, 18.1165], [-34.8089, 21.2255], [-21.7651, 19.8930], [19.6181, 23.7345], [0.6402, -21.5483],
    [-1.3473, 37.9000], [25.2959, -25.7623], [12.5033, -26.1959], [6.8854, 4.0356], [0.0054, -28.7569],
    [33.2295, 36.1654], [15.6404, -11.9467], [5.9950, 38.7484], [-5.0222, 11.5695], [17.6728, -5.4877],
    [35.5702, 5.9551], [-38.6729, 19.6999], [19.3185, 21.9837], [22.9080, -14.7362], [-39.0591, -22.0838],
    [-9.2006, 27.5572], [35.5033, -12.9619], [28.7452, -12.2752], [26.0858, -37.1852], [-3.7008, 30.0341],
    [-17.8820, 21.4484], [22.5237, -25.4262], [-38.3503, -32.0769], [-32.7130, 38.1820], [21.3401, -0.3297],
    [11.6574, 37.5382], [-7.3412, 18.0423], [27.4705, -27.3885], [20.0382, -13.6469], [1.2733, -12.6275],
    [-14.6549, 35.7152], [24.8813, 18.5264], [-2.6267, 1.1418], [11.4816, 28.4874], [19.6560, -8.1417],
])
MOS50_MEANS = np.loadtxt(Path(__file__).parent / "data" / "mos50_means.txt")
WELL_LOG_Z_1D = 9.374541173869195  # ln ∫ exp(-x⁴ + 6x² + 0.5x) dx (scipy quad, rel. error 1e-13)
WELL_DEEP = 0.8443070962111392  # P(x1 > 0) of one well
MANYWELL_LOG_Z = 16 * (WELL_LOG_Z_1D + 0.5 * math.log(2 * math.pi))  # 164.69568
FUNNEL_NECK = 0.5 * math.erfc(2 / math.sqrt(2))  # P(v < -6) = Φ(-2)


@dataclass(frozen=True)
class Target:
    """A target with known answers.

    Attributes:
        name: short name.
        dim: dimension.
        log_density: JAX, one point ``(D,) -> scalar``, unnormalized (torch
            through :func:`torch_log_density`).
        log_z: the exact ``log ∫ exp(log_density)``.
        sample: ``(rng, n) -> (n, D)`` exact draws (numpy).
        modes: ``(n, D) -> (n,)`` integer mode labels (numpy), or ``None``.
        weights: the true mode weights (``None`` without modes).
        prior: where every sampler starts (:mod:`peers`' prior dict).
    """

    name: str
    dim: int
    log_density: Callable
    log_z: float
    sample: Callable
    modes: Callable | None
    weights: np.ndarray | None
    prior: dict


class _Ops:
    """The few array operations the log densities use, for JAX (``jnp``) or torch."""

    def __init__(self, backend: str):
        self.torch = backend == "torch"
        if self.torch:
            import torch

            self._t = torch

    def const(self, a):
        return self._t.as_tensor(a, dtype=self._t.get_default_dtype()) if self.torch else jnp.asarray(a, jnp.float32)

    def sum(self, a, axis=-1):
        return a.sum(axis) if self.torch else jnp.sum(a, axis)

    def logsumexp(self, a, axis=-1):
        return self._t.logsumexp(a, axis) if self.torch else logsumexp(a, axis)

    def exp(self, a):
        return a.exp() if self.torch else jnp.exp(a)

    def log1p(self, a):
        return a.log1p() if self.torch else jnp.log1p(a)


JAX_OPS = _Ops("jax")


# --- GMM-40 ----------------------------------------------------------------------------------

def _gmm40_log_density(x, ops=JAX_OPS):
    sq = ops.sum((x - ops.const(GMM40_MEANS)) ** 2)
    return ops.logsumexp(-0.5 * sq) - math.log(40) - math.log(2 * math.pi)


def _gmm40_sample(rng, n):
    return GMM40_MEANS[rng.integers(0, 40, n)] + rng.standard_normal((n, 2))


def _nearest(means):
    def label(x):
        x = np.asarray(x, np.float64)
        sq = (x * x).sum(1)[:, None] - 2 * x @ means.T + (means * means).sum(1)[None]
        return np.argmin(sq, 1)

    return label


def _weights_of(sample, label, k, n=4_000_000):
    labels = np.concatenate([label(sample(np.random.default_rng(12345 + i), n // 8)) for i in range(8)])
    return np.bincount(labels, minlength=k) / labels.size


# --- Many-Well-32 ----------------------------------------------------------------------------

def _manywell_log_density(x, ops=JAX_OPS):
    x1, x2 = x[0::2], x[1::2]
    return -ops.sum(x1**4 - 6 * x1**2 - 0.5 * x1 + 0.5 * x2**2)


_WELL_GRID = np.linspace(-4.0, 4.0, 400_001)
_WELL_CDF = np.cumsum(np.exp(-_WELL_GRID**4 + 6 * _WELL_GRID**2 + 0.5 * _WELL_GRID - 9.0))
_WELL_CDF /= _WELL_CDF[-1]


def _manywell_sample(rng, n):
    x = np.empty((n, 32))
    x[:, 0::2] = np.interp(rng.random((n, 16)), _WELL_CDF, _WELL_GRID)
    x[:, 1::2] = rng.standard_normal((n, 16))
    return x


# --- funnel ----------------------------------------------------------------------------------

def _funnel_log_density(x, ops=JAX_OPS):
    v, rest = x[0], x[1:]
    return (-(v**2) / 18 - 0.5 * math.log(2 * math.pi * 9)
            - 0.5 * ops.sum(rest**2) * ops.exp(-v) - 0.5 * 9 * v - 4.5 * math.log(2 * math.pi))


def _funnel_sample(rng, n):
    v = 3.0 * rng.standard_normal(n)
    return np.column_stack([v, np.exp(v / 2)[:, None] * rng.standard_normal((n, 9))])


# --- MoS-50 ----------------------------------------------------------------------------------

_T_NORM = float(gammaln(1.5) - gammaln(1.0) - 0.5 * math.log(2 * math.pi))  # log density of t_2 at 0


def _mos50_log_density(x, ops=JAX_OPS):
    per_mode = ops.sum(_T_NORM - 1.5 * ops.log1p((x - ops.const(MOS50_MEANS)) ** 2 / 2))
    return ops.logsumexp(per_mode) - math.log(10)


def _mos50_sample(rng, n):
    return MOS50_MEANS[rng.integers(0, 10, n)] + rng.standard_t(2, (n, 50))


def _mos50_modes(x):
    x = np.asarray(x, np.float64)
    per_mode = -1.5 * np.log1p((x[:, None, :] - MOS50_MEANS[None]) ** 2 / 2).sum(-1)
    return np.argmax(per_mode, 1)


# --- 10-D 4-mode mixture ---------------------------------------------------------------------

_MIXTURE = four_mode_mixture(dim=10)


def _mixture_log_density(x, ops=JAX_OPS):
    sq = ops.sum((x - ops.const(_MIXTURE.means)) ** 2)
    return ops.logsumexp(ops.const(np.log(_MIXTURE.weights)) - 0.5 * sq) - 5 * math.log(2 * math.pi)


def _mixture_sample(rng, n):
    return _MIXTURE.sample(n, rng)


def _mixture_modes(x):
    return np.argmin(((np.asarray(x)[:, None, :] - _MIXTURE.means[None]) ** 2).sum(-1), 1)


_gmm40_modes = _nearest(GMM40_MEANS)

TARGETS: dict[str, Target] = {
    "gmm40": Target("GMM-40", 2, _gmm40_log_density, 0.0, _gmm40_sample, _gmm40_modes,
                    _weights_of(_gmm40_sample, _gmm40_modes, 40), {"kind": "uniform", "low": -40.0, "high": 40.0}),
    "manywell32": Target("Many-Well-32", 32, _manywell_log_density, MANYWELL_LOG_Z, _manywell_sample, None, None,
                         {"kind": "normal", "loc": 0.0, "scale": 2.0}),
    "funnel10": Target("funnel-10", 10, _funnel_log_density, 0.0, _funnel_sample, None, None,
                       {"kind": "normal", "loc": 0.0, "scale": 3.0}),
    "mos50": Target("MoS-50", 50, _mos50_log_density, 0.0, _mos50_sample, _mos50_modes,
                    np.full(10, 0.1), {"kind": "uniform", "low": -15.0, "high": 15.0}),
    "mixture10": Target("mixture-10", 10, _mixture_log_density, 0.0, _mixture_sample, _mixture_modes,
                        np.asarray(_MIXTURE.weights), {"kind": "normal", "loc": 0.0, "scale": 3.0}),
}


def torch_log_density(target: Target) -> Callable:
    """The target's log density of one torch point ``(D,) -> scalar`` (for Pyro's ``potential_fn``)."""
    ops = _Ops("torch")
    return lambda x: target.log_density(x, ops)


def _reference_log_pdf(key: str, x: np.ndarray) -> np.ndarray:
    """The normalized log density written independently with scipy.stats (float64)."""
    from scipy import stats
    from scipy.special import logsumexp as lse

    if key == "gmm40":
        return lse(stats.norm.logpdf(x[:, None, :], GMM40_MEANS[None]).sum(-1), 1) - math.log(40)
    if key == "manywell32":
        x1, x2 = x[:, 0::2], x[:, 1::2]
        return (-(x1**4 - 6 * x1**2 - 0.5 * x1) - WELL_LOG_Z_1D).sum(1) + stats.norm.logpdf(x2).sum(1)
    if key == "funnel10":
        v = x[:, 0]
        return stats.norm.logpdf(v, 0, 3) + stats.norm.logpdf(x[:, 1:], 0, np.exp(v / 2)[:, None]).sum(1)
    if key == "mos50":
        return lse(stats.t.logpdf(x[:, None, :], 2, MOS50_MEANS[None]).sum(-1), 1) - math.log(10)
    return np.log(np.exp(stats.norm.logpdf(x[:, None, :], _MIXTURE.means[None]).sum(-1)) @ _MIXTURE.weights)


if __name__ == "__main__":  # each log density minus log Z against scipy's normalized density, and the weights
    for key, target in TARGETS.items():
        x = target.sample(np.random.default_rng(0), 20_000)
        log_p = np.asarray(jax.vmap(target.log_density)(jnp.asarray(x, jnp.float32)), np.float64) - target.log_z
        gap = np.abs(log_p - _reference_log_pdf(key, x)).max()
        import torch

        with torch.no_grad():
            log_p_torch = torch.func.vmap(torch_log_density(target))(torch.as_tensor(x, dtype=torch.float32))
        gap = max(gap, np.abs(log_p_torch.double().numpy() - target.log_z - _reference_log_pdf(key, x)).max())
        line = f"{target.name:13s} dim {target.dim:3d}  log Z {target.log_z:9.5f}  max |log p - scipy| {gap:.1e}"
        if target.modes is not None:
            w = np.bincount(target.modes(x), minlength=target.weights.size) / len(x)
            line += f"  max |w - w_true| of 20,000 exact draws {np.abs(w - target.weights).max():.4f}"
        print(line)
    wells = (TARGETS["manywell32"].sample(np.random.default_rng(1), 200_000)[:, 0::2] > 0).mean(0)
    print(f"Many-Well deep-side occupancy of 200,000 exact draws: {wells.min():.4f}..{wells.max():.4f} "
          f"(true {WELL_DEEP:.4f})")
