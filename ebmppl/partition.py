"""``log Z`` from importance weights: the estimate both backends' ``log_partition`` return (numpy).

Example:
    >>> from ebmppl.partition import log_partition_from_log_weights
    >>> estimate = log_partition_from_log_weights([0.0] * 100)  # equal weights: Z = 1
    >>> round(estimate.log_z, 6), estimate.ess
    (0.0, 100.0)
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np

from ebmppl._repr import html_table, plus_minus, text

__all__ = ["LogPartition", "log_partition_from_log_weights"]


class LogPartition(NamedTuple):
    """An importance-sampling estimate of ``log Z``.

    Attributes:
        log_z: the estimate ``log mean(w)``, ``w = exp(-E(x)) base(x) / q(x)`` at flow draws ``x``.
        stderr: its standard error (delta method, ``std(w) / (mean(w) sqrt(n))``).
        ess: effective sample size of the weights, ``(Σw)² / Σw²``.
        num_samples: flow draws used.

    It prints as ``log Z ± stderr`` and the ESS, and shows as a table in a
    notebook; it unpacks as the tuple ``(log_z, stderr, ess, num_samples)``.

    Example:
        >>> from ebmppl.partition import LogPartition
        >>> estimate = LogPartition(log_z=-3.21987, stderr=0.01234, ess=812.49, num_samples=1000)
        >>> estimate
        LogPartition(log_z=-3.220 ± 0.012, ess=812.5 of 1000 draws)
        >>> log_z, stderr, ess, n = estimate
        >>> n, estimate._repr_html_().startswith("<table>")
        (1000, True)
    """

    log_z: float
    stderr: float
    ess: float
    num_samples: int

    def _rows(self) -> list[tuple[str, str]]:
        return [("log_z", plus_minus(self.log_z, self.stderr)),
                ("ess", f"{float(self.ess):.1f} of {int(self.num_samples)} draws")]

    def __repr__(self) -> str:
        return text("LogPartition", self._rows())

    def _repr_html_(self) -> str:
        return html_table("LogPartition", self._rows())


def log_partition_from_log_weights(log_weights, min_ess_fraction: float = 0.01, *,
                                   name: str = "log_partition") -> LogPartition:
    """``log Z`` from log importance weights (numpy, float64), warning when the ESS is too low.

    ``name`` is the function named in errors and warnings (``log_partition``
    or ``log_evidence``).

    Raises:
        ValueError: a weight is NaN or ``+inf`` (the energy is NaN or ``-inf``
            at some draws), or every weight is zero.
    """
    log_w = np.asarray(log_weights, dtype=np.float64).ravel()
    n = log_w.size
    bad = np.isnan(log_w) | (log_w == np.inf)
    if bad.any():
        raise ValueError(
            f"{name}: the energy is NaN or -inf at {int(bad.sum())} of {n} flow draws "
            "(their importance weights are NaN or infinite)"
        )
    top = log_w.max()
    if top == -np.inf:
        raise ValueError(f"{name}: all {n} importance weights are zero (the energy is +inf at every draw)")
    w = np.exp(log_w - top)
    mean = w.mean()
    stderr = float(w.std(ddof=1) / (mean * math.sqrt(n))) if n > 1 else math.inf
    ess = float(w.sum() ** 2 / (w**2).sum())
    if ess < max(10.0, min_ess_fraction * n):
        warnings.warn(
            f"{name}: the importance weights' effective sample size is {ess:.1f} of {n} draws; "
            "the flow is far from the model and the estimate and its standard error are not to be trusted"
        )
    return LogPartition(float(top + math.log(mean)), stderr, ess, n)
