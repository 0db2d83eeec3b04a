"""Chain diagnostics, backend-neutral: numpy in, numbers or ArviZ out.

Example:
    >>> import numpy as np
    >>> from ebmppl.diagnostics import mode_weight_zscores
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.choice(2, size=(8, 500), p=[0.7, 0.3])  # 8 chains of iid mode labels
    >>> z = mode_weight_zscores(labels, [0.7, 0.3])
    >>> bool(np.all(np.abs(z) < 4))
    True
"""

from __future__ import annotations

import numpy as np

__all__ = ["mode_weight_mcse", "mode_weight_zscores"]


def mode_weight_mcse(labels) -> tuple[np.ndarray, np.ndarray]:
    """Estimated weight of each mode and its Monte-Carlo standard error.

    The MCSE is ArviZ's, from the bulk effective sample size of each mode's
    indicator, with walkers as chains: stuck chains give a small ESS and so a
    large MCSE; an indicator that never varies gives MCSE 0 (no information).

    Args:
        labels: integer mode index per draw, shape ``(chains, draws)``.

    Returns:
        ``(weights, mcse)``, each of shape ``(K,)`` with ``K = labels.max() + 1``.
    """
    import arviz as az

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (chains, draws), got {labels.shape}")
    num_modes = int(labels.max()) + 1
    weights, mcse = np.zeros(num_modes), np.zeros(num_modes)
    for k in range(num_modes):
        indicator = (labels == k).astype(float)
        weights[k] = indicator.mean()
        if indicator.std() > 0:
            mcse[k] = float(az.mcse(indicator, method="mean"))
    return weights, mcse


def mode_weight_zscores(labels, true_weights) -> np.ndarray:
    """``(estimated - true) / MCSE`` for each mode (``inf`` where the MCSE is 0 and the estimate is off).

    Args:
        labels: integer mode index per draw, shape ``(chains, draws)``.
        true_weights: the known weights, shape ``(K,)``.
    """
    true_weights = np.asarray(true_weights, float)
    labels = np.asarray(labels)
    padded = np.concatenate([labels.ravel(), np.arange(len(true_weights))])
    if padded.max() >= len(true_weights):
        raise ValueError("labels name more modes than true_weights has")
    weights, mcse = mode_weight_mcse(labels)
    weights = np.pad(weights, (0, len(true_weights) - len(weights)))
    mcse = np.pad(mcse, (0, len(true_weights) - len(mcse)))
    error = weights - true_weights
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(mcse > 0, error / np.where(mcse > 0, mcse, 1.0), np.where(error == 0, 0.0, np.inf))
    return z
