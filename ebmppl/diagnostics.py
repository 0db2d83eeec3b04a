"""Chain diagnostics, backend-neutral: numpy in, numbers, ArviZ, tables or figures out.

:func:`summary` is the table of a run (ArviZ's summary, acceptance, mode
weights); :func:`plot_training` and :func:`plot_mode_weights` draw a training
history. ArviZ, pandas and matplotlib are imported when used, torch and JAX
never.

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

__all__ = [
    "grid_mode_weights",
    "mode_weight_mcse",
    "mode_weight_zscores",
    "plot_mode_weights",
    "plot_training",
    "summary",
    "to_arviz",
]

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


# --- the table of a run ----------------------------------------------------------------------------
# acceptance columns of summary() and the sample_stats names they are read from (to_arviz's, the kernels')
_ACCEPT_COLUMNS = {
    "global_accept_prob": ("global_acceptance_rate", "global_accept_prob"),
    "local_accept_prob": ("local_acceptance_rate", "local_accept_prob"),
}


def summary(data, mode_centres=None, *, site: str | None = None, var_names=None, ci_prob: float | None = None,
            round_to="none", **kwargs):
    """ArviZ's summary of a run, one row per site coordinate, with acceptance and mode weights.

    The rows and columns of ``az.summary`` (``mean``, ``sd``, the credible
    interval, ``mcse_mean``, ``mcse_sd``, ``ess_bulk``, ``ess_tail``, ``r_hat``)
    with walkers as chains (the ``print_summary`` of a Pyro ``FlowMCMC``),
    then ``global_accept_prob`` and ``local_accept_prob``: the mean acceptance
    of the flow's and of the local moves over all draws, the same in every
    row, NaN when the kernel reports none (NUTS). With ``mode_centres``, each
    draw of ``site`` (flattened) goes to its nearest centre, and a row
    ``mode_weight[k]`` per centre summarises the indicator of mode ``k``:
    ``mean`` is the mode's weight, ``mcse_mean`` its Monte-Carlo standard
    error (as :func:`mode_weight_mcse`), ``ess_bulk`` and ``r_hat`` say
    whether the chains cross between modes (NaN for a mode never visited).

    Args:
        data: a NumPyro or Pyro ``MCMC`` that has run (see :func:`to_arviz`),
            ArviZ data with a ``posterior`` group, or a dict of groups
            ``{"posterior": {name: (chains, draws, ...)}, "sample_stats": {...}}``.
        mode_centres: optional centres, ``(K, d)``, ``d`` the size of one draw of ``site``.
        site: the site of the modes; ``None`` for the posterior's only variable.
        var_names: the variables to summarise (``None``: all).
        ci_prob: probability of the credible interval (ArviZ's default when ``None``).
        round_to: decimals to round to; ``"none"`` keeps every digit.
        **kwargs: more arguments of ``az.summary`` for the sites' rows (they
            differ between ArviZ 0.x and 1.x); ``kind`` applies to the modes' rows too.

    Returns:
        A pandas ``DataFrame``: the sites' rows, then the ``mode_weight[k]`` rows.

    Example:
        >>> import numpy as np
        >>> from ebmppl.diagnostics import summary
        >>> rng = np.random.default_rng(0)
        >>> centres = np.array([[-3.0, 0.0], [3.0, 0.0]])
        >>> x = centres[rng.choice(2, size=(4, 200), p=[0.25, 0.75])] + rng.normal(size=(4, 200, 2))
        >>> run = {"posterior": {"x": x}, "sample_stats": {"global_accept_prob": np.full((4, 200), 0.5)}}
        >>> table = summary(run, mode_centres=centres)
        >>> table.index.tolist()
        ['x[0]', 'x[1]', 'mode_weight[0]', 'mode_weight[1]']
        >>> round(float(table.loc["mode_weight[1]", "mean"]), 2), float(table["global_accept_prob"].iloc[0])
        (0.76, 0.5)
    """
    import pandas as pd

    data = _as_arviz_data(data)
    options = {"round_to": round_to}  # for the sites' rows and the modes' alike
    if ci_prob is not None:
        options["ci_prob" if _arviz_major() >= 1 else "hdi_prob"] = ci_prob
    if "kind" in kwargs:
        options["kind"] = kwargs.pop("kind")
    table = _az_summary(data, var_names, {**options, **kwargs})
    if mode_centres is not None:
        table = pd.concat([table, _mode_rows(data, site, mode_centres, options)])
    return table.assign(**_acceptance(_group(data, "sample_stats")))


def _acceptance(stats) -> dict[str, float]:
    """The mean of each acceptance statistic over all chains and draws (NaN when not reported)."""
    means = {}
    for column, names in _ACCEPT_COLUMNS.items():
        found = [name for name in names if stats is not None and name in stats.data_vars]
        means[column] = float(np.mean(np.asarray(stats[found[0]], float))) if found else np.nan
    return means


def _mode_rows(data, site: str | None, mode_centres, options: dict):
    """ArviZ's summary of the indicators of the modes: rows ``mode_weight[k]``."""
    labels = _nearest_centre(_site_draws(_group(data, "posterior"), site), mode_centres)
    indicators = (labels[..., None] == np.arange(len(mode_centres))).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):  # a mode never visited: a constant indicator
        return _az_summary(_from_dict({"mode_weight": indicators}, {}), None, options)


def _arviz_major() -> int:
    import arviz as az

    return int(az.__version__.split(".")[0])


def _az_summary(data, var_names, options: dict):
    import arviz as az

    return az.summary(data, var_names=var_names, **options)


def _as_arviz_data(data):
    """ArviZ data of an ``MCMC`` (:func:`to_arviz`) or a dict of groups, or ``data`` itself."""
    if type(data).__module__.split(".")[0] in ("pyro", "numpyro"):
        return to_arviz(data)
    if isinstance(data, dict):
        if "posterior" not in data or set(data) - {"posterior", "sample_stats"}:
            raise ValueError(f"a dict of groups has 'posterior' and optionally 'sample_stats', got {sorted(data)}")
        return _from_dict(data["posterior"], data.get("sample_stats") or {})
    if _group(data, "posterior") is None:
        raise TypeError(f"summary takes a Pyro or NumPyro MCMC or ArviZ data with a posterior, got {type(data).__name__}")
    return data


def _group(data, name: str):
    """A group of ArviZ data (``InferenceData`` on 0.x, ``DataTree`` on 1.x), or ``None``."""
    return getattr(data, name, None)


def _site_draws(posterior, site: str | None) -> np.ndarray:
    """One site's draws as ``(chains, draws, d)``."""
    names = list(posterior.data_vars)
    if site is None:
        if len(names) != 1:
            raise ValueError(f"the posterior has the sites {names}: say which one the mode centres are of (site=...)")
        site = names[0]
    if site not in names:
        raise ValueError(f"no site {site!r} in the posterior (it has {names})")
    values = np.asarray(posterior[site])
    return values.reshape(values.shape[0], values.shape[1], -1)


def _nearest_centre(draws: np.ndarray, mode_centres) -> np.ndarray:
    """The index of the nearest centre of each draw, ``(chains, draws)``."""
    centres = np.asarray(mode_centres, float)
    if centres.ndim != 2 or centres.shape[1] != draws.shape[-1]:
        raise ValueError(f"mode_centres must have shape (K, {draws.shape[-1]}) for this site, got {centres.shape}")
    distances = ((draws[..., None, :] - centres) ** 2).sum(-1)
    return distances.argmin(-1)


# --- figures of a training history --------------------------------------------------------------------
_TRAINING_LINES = (
    (0, "energy_data", "E(data)"),
    (0, "energy_negatives", "E(negatives)"),
    (1, "global_accept_prob", "global (i-SIR)"),
    (1, "local_accept_prob", "local (MALA)"),
)


def plot_training(history: dict):
    """The energies of data and negatives (left) and the acceptance rates (right) per training step.

    Args:
        history: per-step statistics, ``{name: list or array}``, as ``EBMTrainer.run``
            (``result.history``) and the command line (``history.npz``) record them:
            ``energy_data``, ``energy_negatives``, ``global_accept_prob``,
            ``local_accept_prob``; the ones missing are left out (the left
            panel shows ``loss`` when neither energy is there).

    Returns:
        A matplotlib ``Figure`` with two axes (not registered with ``pyplot``:
        a notebook shows it once, as the cell's value; save it with ``fig.savefig``).

    Raises:
        ValueError: the history has none of these statistics.

    Example:
        >>> import numpy as np
        >>> from ebmppl.diagnostics import plot_training
        >>> history = {"energy_data": np.linspace(1, 0, 50), "energy_negatives": np.linspace(-1, 0, 50),
        ...            "global_accept_prob": np.full(50, 0.4), "local_accept_prob": np.full(50, 0.6)}
        >>> fig = plot_training(history)
        >>> [len(ax.lines) for ax in fig.axes]
        [2, 2]
    """
    lines = [(panel, name, label) for panel, name, label in _TRAINING_LINES if name in history]
    if not any(panel == 0 for panel, _, _ in lines) and "loss" in history:
        lines.insert(0, (0, "loss", "loss"))
    if not lines:
        raise ValueError(f"the history has none of {[name for _, name, _ in _TRAINING_LINES]} or 'loss'")
    fig = _figure((10, 3.5))
    axes = fig.subplots(1, 2)
    for panel, name, label in lines:
        values = np.asarray(history[name], float)
        axes[panel].plot(np.arange(1, len(values) + 1), values, label=label, lw=0.7)
    axes[0].set_title("energy")
    axes[1].set_title("acceptance")
    axes[1].set_ylim(0, 1.02)
    for ax in axes:
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=8)
    return fig


def plot_mode_weights(history: dict, true_weights=None):
    """The negatives' mode weights over training (a moving average over 1/50 of the run), against the true ones.

    Args:
        history: per-step statistics with ``mode_weights``, ``(steps, K)``: the
            history of a trainer given ``mode_centres``.
        true_weights: optional known weights ``(K,)``, drawn dashed in each mode's colour.

    Returns:
        A matplotlib ``Figure`` with one axis: a line per mode (and a dashed line per true weight).

    Raises:
        ValueError: the history has no mode weights.

    Example:
        >>> import numpy as np
        >>> from ebmppl.diagnostics import plot_mode_weights
        >>> history = {"mode_weights": np.tile([0.2, 0.8], (100, 1))}
        >>> fig = plot_mode_weights(history, true_weights=[0.25, 0.75])
        >>> len(fig.axes[0].lines)  # 2 modes, 2 true weights
        4
    """
    weights = np.asarray(history.get("mode_weights", []), float)
    if weights.ndim != 2 or not len(weights):
        raise ValueError("the history has no mode_weights (steps, K): train with mode_centres")
    if true_weights is not None and np.shape(true_weights) != weights.shape[1:]:
        raise ValueError(f"true_weights must have shape ({weights.shape[1]},), got {np.shape(true_weights)}")
    window = max(1, len(weights) // 50)
    kernel = np.ones(window) / window
    smooth = np.stack([np.convolve(w, kernel, mode="valid") for w in weights.T], -1)
    fig = _figure((6, 3.5))
    ax = fig.subplots()
    for k in range(weights.shape[1]):
        line, = ax.plot(np.arange(len(smooth)) + window, smooth[:, k], lw=0.8, label=f"mode {k}")
        if true_weights is not None:
            ax.axhline(float(true_weights[k]), color=line.get_color(), ls="--", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("negatives' mode weight")
    ax.set_title("mode weights over training" + (" (dashed: true)" if true_weights is not None else ""))
    ax.legend(fontsize=7)
    return fig


def _figure(size: tuple[float, float]):
    """A matplotlib ``Figure`` outside ``pyplot`` (no global state, no backend switched)."""
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")
