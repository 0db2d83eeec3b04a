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

import warnings

import numpy as np

__all__ = ["grid_mode_weights", "mode_weight_mcse", "mode_weight_zscores", "to_arviz"]

# Kernel statistics and their ArviZ names; lp is minus the potential energy.
_STAT_NAMES = {
    "accept_prob": "acceptance_rate",
    "global_accept_prob": "global_acceptance_rate",
    "local_accept_prob": "local_acceptance_rate",
    "diverging": "diverging",
    "step_size": "step_size",
    "num_steps": "n_steps",
}


def to_arviz(mcmc):
    """ArviZ data of a Pyro or NumPyro ``MCMC`` run, on ArviZ 0.23 and 1.x alike.

    The ``posterior`` group has one chain per walker (ebmppl's Pyro
    ``FlowMCMC``, whose walkers share one Pyro chain) or per chain, and the
    sites' values in their constrained space. ``sample_stats`` has what the
    kernel reported: ``acceptance_rate``, ``lp`` (the log density, minus the
    potential energy), ``global_acceptance_rate`` and
    ``local_acceptance_rate`` for ``FlowMCMC``; ``diverging``, ``step_size``
    and ``n_steps`` for ``NeuTraHMC``; ``diverging`` for NUTS/HMC.
    It is built with ``az.from_dict``, so it is an ``InferenceData`` on ArviZ
    0.x and a ``DataTree`` on ArviZ 1.x.

    Args:
        mcmc: a ``pyro.infer.MCMC`` or ``numpyro.infer.MCMC`` that has run.

    Returns:
        The ArviZ data, with groups ``posterior`` and ``sample_stats``.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from ebmppl.pyro import FlowMCMC
        >>> from ebmppl.diagnostics import to_arviz
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> pyro.set_rng_seed(0)
        >>> mcmc = MCMC(FlowMCMC(model, num_walkers=4), warmup_steps=50, num_samples=30,
        ...             disable_progbar=True)
        >>> mcmc.run()
        >>> data = to_arviz(mcmc)
        >>> data["posterior"]["x"].shape, data["sample_stats"]["lp"].shape
        ((4, 30), (4, 30))
    """
    module = type(mcmc).__module__.split(".")[0]
    if module == "pyro":
        posterior, stats = _from_pyro(mcmc)
    elif module == "numpyro":
        posterior, stats = _from_numpyro(mcmc)
    else:
        raise TypeError(f"to_arviz takes a Pyro or NumPyro MCMC, got {type(mcmc).__name__}")
    return _from_dict(posterior, stats)


def _from_dict(posterior: dict, sample_stats: dict):
    import arviz as az

    if int(az.__version__.split(".")[0]) >= 1:
        groups = {"posterior": posterior}
        if sample_stats:
            groups["sample_stats"] = sample_stats
        return az.from_dict(groups)
    return az.from_dict(posterior=posterior, sample_stats=sample_stats or None)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.asarray(value)


def _from_numpyro(mcmc) -> tuple[dict, dict]:
    posterior = {name: _numpy(v) for name, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = {name: _numpy(v) for name, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    stats = {_STAT_NAMES[name]: v for name, v in extra.items() if name in _STAT_NAMES}
    if "potential_energy" in extra:
        stats["lp"] = -extra["potential_energy"]
    return posterior, stats


def _from_pyro(mcmc) -> tuple[dict, dict]:
    samples = {name: _numpy(v) for name, v in mcmc.get_samples(group_by_chain=True).items()}
    kernel = mcmc.kernel
    if not type(kernel).__module__.startswith("ebmppl.pyro"):  # one walker per Pyro chain
        return samples, _pyro_divergences(mcmc, samples)
    runs = [run for run in kernel.sample_stats if run["accept_prob"].numel()]
    posterior = samples  # the kernel reports its walkers as Pyro chains: (chains * walkers, draws, ...)
    if len(runs) != mcmc.num_chains:
        warnings.warn(
            "the kernel's per-draw statistics stay in the worker processes when Pyro runs "
            "chains in parallel: sample_stats is left out (run FlowMCMC in one Pyro chain; "
            "its walkers are the chains)",
            stacklevel=3,
        )
        return posterior, {}
    stats = {}
    for name in runs[0]:
        value = np.concatenate([_numpy(run[name]) for run in runs])
        if name == "potential_energy":
            stats["lp"] = -value
        else:
            stats[_STAT_NAMES[name]] = value
    return posterior, stats


def _pyro_divergences(mcmc, samples) -> dict:
    divergences = mcmc.diagnostics().get("divergences")
    if not samples or not isinstance(divergences, dict):
        return {}
    num_chains, num_draws = next(iter(samples.values())).shape[:2]
    diverging = np.zeros((num_chains, num_draws), bool)
    for chain in range(num_chains):
        index = np.asarray(divergences.get(f"chain {chain}", []), int)
        diverging[chain, index[(index >= 0) & (index < num_draws)]] = True
    return {"diverging": diverging}


def grid_mode_weights(log_density, assign, low: float = -5.0, high: float = 5.0, num: int = 301) -> np.ndarray:
    """Mode weights of a 2-D unnormalized density, by integration on a square grid.

    Args:
        log_density: maps points ``(n, 2)`` (numpy) to unnormalized log densities ``(n,)``.
        assign: maps points ``(n, 2)`` to mode indices ``(n,)``.
        low, high: the grid's bounds on both axes.
        num: grid points per axis.

    Returns:
        The mass of each mode, shape ``(K,)``, summing to one.

    Example:
        >>> import numpy as np
        >>> from ebmppl.datasets import two_modes
        >>> target = two_modes()
        >>> grid_mode_weights(target.log_prob, target.assign).round(3).tolist()
        [0.333, 0.667]
    """
    axis = np.linspace(low, high, num)
    points = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    log_values = np.asarray(log_density(points), float)
    if not np.isfinite(log_values).any():
        raise ValueError("the log density is NaN or infinite everywhere on the grid")
    values = np.exp(log_values - np.nanmax(np.where(np.isfinite(log_values), log_values, -np.inf)))
    values = np.where(np.isfinite(values), values, 0.0)
    labels = np.asarray(assign(points))
    weights = np.bincount(labels, weights=values, minlength=int(labels.max()) + 1)
    return weights / weights.sum()


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
