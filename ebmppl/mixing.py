"""Whether the walkers have mixed by the end of warm-up (numpy, both backends).

Example:
    >>> import numpy as np
    >>> from ebmppl.mixing import walker_rhat
    >>> rng = np.random.default_rng(0)
    >>> round(walker_rhat(rng.normal(size=(100, 8, 2)))[0], 1)
    1.0
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["MIXING_RHAT", "walker_rhat", "warn_if_not_mixed"]

#: R-hat between walkers over the last warm-up window above which both backends' kernels
#: warn at the end of warm-up that the walkers have not mixed (:func:`warn_if_not_mixed`).
MIXING_RHAT = 1.1


def walker_rhat(window) -> tuple[float, int]:
    """Split R-hat between walkers over a window of positions ``(iterations, walkers, D)`` in order.

    Each walker's window is cut in two halves, and the halves are the chains
    of Gelman and Rubin's R-hat: it is large when the walkers sit in different
    places and when they still drift together. Returns the largest over the
    coordinates and the flat coordinate where it is; a coordinate that no
    walker moved gives 1.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> mixed = rng.normal(size=(100, 8, 2))
        >>> round(walker_rhat(mixed)[0], 1)
        1.0
        >>> walker_rhat(mixed + np.arange(8)[None, :, None])[0] > 2  # each walker in its own place
        True
        >>> walker_rhat(mixed + np.linspace(0, 4, 100)[:, None, None])[0] > 1.2  # all drifting together
        True
    """
    w = np.asarray(window, dtype=np.float64)
    half = w.shape[0] // 2
    w = np.concatenate([w[:half], w[half:2 * half]], axis=1)
    n = w.shape[0]
    within = w.var(0, ddof=1).mean(0)
    between = n * w.mean(0).var(0, ddof=1)
    pooled = (n - 1) / n * within + between / n
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.where(within > 0, np.sqrt(pooled / within), np.where(between > 0, np.inf, 1.0))
    rhat = np.where(np.isnan(rhat), np.inf, rhat)
    k = int(np.argmax(rhat))
    return float(rhat[k]), k


def warn_if_not_mixed(kernel: str, window, num_warmup: int, setting: str, site_of=None) -> float | None:
    """Warn when the walkers have not mixed by the end of warm-up; return the R-hat.

    ``window`` is the kernels' ring buffer of the warm-up's last positions,
    ``(W, walkers, D)``: iteration ``i`` is at row ``i % W``, and only the last
    ``min(W, num_warmup)`` iterations were written. Their split R-hat
    (:func:`walker_rhat`) above :data:`MIXING_RHAT` means the walkers still
    sit in different places or still drift: the draws would not represent
    the target. The warning names the host's setting for a longer warm-up
    (``num_warmup`` in NumPyro, ``warmup_steps`` in Pyro) and, with
    ``site_of(k)``, the site of the worst coordinate. Windows of fewer than 10
    iterations or one walker are not checked (``None``).

    Example:
        >>> import warnings
        >>> import numpy as np
        >>> stuck = np.random.default_rng(0).normal(size=(100, 8, 2)) + np.arange(8)[None, :, None]
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     rhat = warn_if_not_mixed("FlowMCMC", stuck, 500, "num_warmup")
        >>> "num_warmup=1000" in str(caught[0].message)
        True
    """
    w = np.asarray(window, dtype=np.float64)
    rows = min(w.shape[0], int(num_warmup))
    if rows < 10 or w.ndim != 3 or w.shape[1] < 2:
        return None
    size = w.shape[0]
    rhat, k = walker_rhat(w[[(int(num_warmup) - rows + j) % size for j in range(rows)]])
    if rhat > MIXING_RHAT:
        where = f"coordinate {k} of the flattened unconstrained sites"
        if site_of is not None:
            where += f", in site {site_of(k)!r}"
        warnings.warn(
            f"{kernel}: the walkers have not mixed by the end of warm-up: split R-hat between walkers over "
            f"the last {rows} warm-up iterations is {rhat:.2f} ({where}), so the draws may not represent "
            f"the target. Run a longer warm-up ({setting}={2 * int(num_warmup)} or more) and check R-hat "
            "of the draws.",
            stacklevel=2,
        )
    return rhat
