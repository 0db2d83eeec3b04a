"""Known moments of one site of every constraint family, shared by both backends'
``test_constraints.py``: the model of each backend draws

- ``loc`` real: Normal(1, 2);
- ``scale`` positive: Gamma(3, rate 2);
- ``frac`` interval (0, 1): Beta(2, 3);
- ``probs`` simplex: Dirichlet(1, 2, 3);
- ``cuts`` ordered vector: a standard normal pushed through the ordered transform
  (``cuts[0] = z_0``, ``cuts[k] = cuts[k-1] + exp(z_k)``);
- ``corr`` Cholesky factor of a 3x3 correlation matrix: LKJ(concentration 2), whose
  correlations are 2 Beta(2.5, 2.5) - 1.
"""

import math

import arviz as az
import numpy as np

E_HALF = math.exp(0.5)
DIRICHLET = np.array([1.0, 2.0, 3.0])
_A0 = DIRICHLET.sum()

#: (site, how to read the statistic from the site's draws, mean, sd or None)
TRUTH = [
    ("loc", lambda v: v, 1.0, 2.0),
    ("scale", lambda v: v, 1.5, math.sqrt(3.0) / 2),
    ("frac", lambda v: v, 0.4, 0.2),
    *[
        ("probs", (lambda k: lambda v: v[..., k])(k), DIRICHLET[k] / _A0,
         math.sqrt(DIRICHLET[k] * (_A0 - DIRICHLET[k]) / (_A0**2 * (_A0 + 1))))
        for k in range(3)
    ],
    ("cuts", lambda v: v[..., 0], 0.0, 1.0),
    ("cuts", lambda v: v[..., 1], E_HALF, None),  # a log-normal step: its sd converges slowly
    ("corr", lambda v: v[..., 1, 0], 0.0, math.sqrt(1.0 / 6.0)),
    ("corr", lambda v: v[..., 2, 0], 0.0, math.sqrt(1.0 / 6.0)),
]


def moment_zscores(samples: dict) -> list[tuple[str, float, float]]:
    """``(statistic, z of the mean, z of the sd)`` for every row of :data:`TRUTH`.

    ``samples`` are grouped by chain, ``(chains, draws, *site_shape)``; z is the
    error over its Monte-Carlo standard error (ArviZ), ``nan`` when the sd is not checked.
    """
    rows = []
    for k, (site, read, mean, sd) in enumerate(TRUTH):
        values = np.asarray(read(np.asarray(samples[site])), dtype=float)
        z_mean = (values.mean() - mean) / float(az.mcse(values, method="mean"))
        z_sd = math.nan if sd is None else (values.std() - sd) / float(az.mcse(values, method="sd"))
        rows.append((f"{site}#{k}", float(z_mean), float(z_sd)))
    return rows


def failures(samples: dict, bound: float = 4.0) -> list[tuple[str, float, float]]:
    """The rows of :func:`moment_zscores` with a z beyond ``bound``."""
    return [row for row in moment_zscores(samples) if abs(row[1]) > bound or abs(row[2]) > bound]
