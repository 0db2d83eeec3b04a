"""Closed-form evidence shared by both backends' ``test_log_evidence.py``.

- A normal model with unknown mean and precision and its conjugate
  normal-gamma prior: ``tau ~ Gamma(A0, rate B0)`` (a positive site, sampled
  through a log transform), ``mu | tau ~ N(M0, 1 / (K0 tau))``,
  ``y_i | mu, tau ~ N(mu, 1 / tau)``; ``log p(y)`` in closed form.
- A 2-D mixture of two unit Gaussians with an unnormalized energy:
  ``E(x) = -log mixture(x) + LOG_C``, so ``log Z = -LOG_C``.
"""

import math

import numpy as np

M0, K0, A0, B0 = 0.0, 1.0, 2.0, 2.0
Y = np.random.default_rng(0).normal(1.0, 2.0, 20)
MEANS = np.array([[3.0, 0.0], [-2.0, 2.0]])
WEIGHTS = np.array([0.7, 0.3])
LOG_C = 1.3


def normal_gamma_log_evidence(y=Y) -> float:
    """``log p(y)`` of the normal-gamma model (its marginal is a product of Student-t factors)."""
    y = np.asarray(y, np.float64)
    n, ybar = y.size, y.mean()
    kn, an = K0 + n, A0 + n / 2
    bn = B0 + 0.5 * np.sum((y - ybar) ** 2) + K0 * n * (ybar - M0) ** 2 / (2 * kn)
    return float(math.lgamma(an) - math.lgamma(A0) + A0 * math.log(B0) - an * math.log(bn)
                 + 0.5 * math.log(K0 / kn) - n / 2 * math.log(2 * math.pi))
