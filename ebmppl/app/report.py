"""The report of a run: ``metrics.json`` and one figure per function (matplotlib, imported when drawing).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from ebmppl.app.data import prepare_data
    >>> from ebmppl.app.report import RunResult, write_report
    >>> from ebmppl.partition import LogPartition
    >>> data = prepare_data("line_of_four", seed=0, num_points=1000)
    >>> names = ("loss", "energy_data", "energy_negatives", "global_accept_prob", "local_accept_prob")
    >>> history = {name: np.full(10, 0.5) for name in names}
    >>> history["mode_weights"] = np.tile(data.target.weights, (10, 1))
    >>> result = RunResult(history, samples=data.train, log_density=data.target.log_prob,
    ...                    log_partition=LogPartition(0.0, 0.01, 1000.0, 1000),
    ...                    mode_weights=data.target.weights.tolist())
    >>> metrics = write_report(Path(tempfile.mkdtemp()), data, result, wall_seconds=1.0)
    >>> metrics["steps"], metrics["figures"]
    (10, ['samples.png', 'density.png', 'training.png', 'mode_weights.png'])

    The parts of ``write_report``, one at a time:

    >>> from ebmppl.app.report import plot_density, plot_mode_weights, plot_samples, plot_training, run_metrics
    >>> run_metrics(data, result, wall_seconds=1.0)["true_mode_weights"]
    [0.1, 0.2, 0.3, 0.4]
    >>> folder = Path(tempfile.mkdtemp())
    >>> plot_samples(folder, data, data.train), plot_training(folder, history)
    ('samples.png', 'training.png')
    >>> plot_density(folder, data, None), plot_mode_weights(folder, data, history)  # no density given: no figure
    (None, 'mode_weights.png')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ebmppl import diagnostics
from ebmppl.app.config import write_json
from ebmppl.app.data import RunData
from ebmppl.partition import LogPartition

__all__ = [
    "RunResult",
    "SampleResult",
    "mode_weights_by_importance",
    "plot_density",
    "plot_mode_weights",
    "plot_samples",
    "plot_training",
    "run_metrics",
    "write_report",
]


@dataclass(frozen=True)
class RunResult:
    """What a backend's ``train`` returns: what the report needs.

    Attributes:
        history: the training statistics per step (``loss``, ``energy_data``,
            ``energy_negatives``, ``global_accept_prob``, ``local_accept_prob``,
            and ``mode_weights``, ``(steps, K)``, for data with known modes).
        samples: the trainer's chains at the end, in data coordinates.
        log_density: the normalised model's log density (numpy in and out,
            data coordinates).
        log_partition: the estimate of ``log Z`` (standardised coordinates).
        mode_weights: the model's mode weights by importance sampling, for
            data with known modes; else ``None``.
    """

    history: dict[str, np.ndarray]
    samples: np.ndarray
    log_density: Callable[[np.ndarray], np.ndarray]
    log_partition: LogPartition
    mode_weights: list[float] | None = None


@dataclass(frozen=True)
class SampleResult:
    """What a backend's ``sample_run`` returns.

    Attributes:
        draws: the draws, ``(num, D)``, chains interleaved.
        accept_prob: the mean acceptance probability over draws and chains.
        global_accept_prob: the same, of the flow's (global) moves.
        min_ess: the smallest bulk ESS over coordinates.
    """

    draws: np.ndarray
    accept_prob: float
    global_accept_prob: float
    min_ess: float

    @classmethod
    def from_chains(cls, chains: np.ndarray, num: int, accept_prob: float, global_accept_prob: float) -> SampleResult:
        """The first ``num`` draws of ``chains`` shaped ``(chains, draws, D)``, and their smallest bulk ESS.

        Example:
            >>> chains = np.random.default_rng(0).normal(size=(4, 100, 2))
            >>> result = SampleResult.from_chains(chains, 350, accept_prob=0.9, global_accept_prob=0.5)
            >>> result.draws.shape, result.min_ess > 200
            ((350, 2), True)
        """
        import arviz as az

        chains = np.asarray(chains)
        min_ess = float(az.ess(az.convert_to_dataset({"x": chains}), method="bulk")["x"].min())
        draws = chains.transpose(1, 0, 2).reshape(-1, chains.shape[-1])[:num]
        return cls(draws, float(accept_prob), float(global_accept_prob), min_ess)


def mode_weights_by_importance(target, x: np.ndarray, log_w: np.ndarray) -> list[float]:
    """The model's mode weights from flow draws ``x`` with log importance weights ``log_w``.

    Args:
        target: the data's known distribution (its ``assign`` tells each
            point's mode).
        x: draws of the flow, in data coordinates, ``(n, D)``.
        log_w: their log importance weights, model over flow, ``(n,)``.

    Example:
        >>> from ebmppl.datasets import line_of_four
        >>> target = line_of_four()
        >>> x = target.sample(20_000, np.random.default_rng(0))
        >>> np.round(mode_weights_by_importance(target, x, np.zeros(len(x))), 1).tolist()
        [0.1, 0.2, 0.3, 0.4]
    """
    w = np.exp(log_w - log_w.max())
    weights = np.bincount(target.assign(x), weights=w, minlength=len(target.weights))
    return (weights / weights.sum()).tolist()


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity."""
    return float(value) if math.isfinite(value) else None


def run_metrics(data: RunData, result: RunResult, wall_seconds: float) -> dict:
    """The numbers of ``metrics.json``: ``log Z``, log-likelihoods, acceptance, losses, mode weights.

    Args:
        data: the run's data.
        result: what the backend's ``train`` returned.
        wall_seconds: how long training took.
    """
    history, log_density, estimate = result.history, result.log_density, result.log_partition
    metrics = dict(
        steps=int(len(history["loss"])),
        wall_seconds=round(wall_seconds, 1),
        log_z=estimate.log_z, log_z_stderr=_finite_or_none(estimate.stderr), log_z_ess=estimate.ess,
        train_log_likelihood=_finite_or_none(float(np.mean(log_density(data.train)))),
        test_log_likelihood=_finite_or_none(float(np.mean(log_density(data.test)))),
        final_global_accept_prob=float(np.mean(history["global_accept_prob"][-100:])),
        final_local_accept_prob=float(np.mean(history["local_accept_prob"][-100:])),
        loss=np.asarray(history["loss"], float).tolist(),
        global_accept_prob=np.asarray(history["global_accept_prob"], float).tolist(),
        local_accept_prob=np.asarray(history["local_accept_prob"], float).tolist(),
    )
    if data.target is not None:
        metrics["true_mode_weights"] = data.target.weights.tolist()
        metrics["mode_weights"] = result.mode_weights
        metrics["negatives_mode_weights"] = data.target.mode_weights(result.samples).tolist()
        metrics["mode_weights_over_training"] = np.asarray(history["mode_weights"], float).tolist()
    return metrics


def write_report(run_dir: Path, data: RunData, result: RunResult, wall_seconds: float) -> dict:
    """Draw the figures and write ``metrics.json`` (with the figures' names under ``figures``).

    Args:
        run_dir: the run folder.
        data: the run's data.
        result: what the backend's ``train`` returned.
        wall_seconds: how long training took.

    Returns:
        The metrics written.
    """
    metrics = run_metrics(data, result, wall_seconds)
    figures = (
        plot_samples(run_dir, data, result.samples),
        plot_density(run_dir, data, result.log_density),
        plot_training(run_dir, result.history),
        plot_mode_weights(run_dir, data, result.history),
    )
    metrics["figures"] = [name for name in figures if name is not None]
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def _pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, run_dir: Path, name: str) -> str:
    """Save ``fig`` as ``run_dir / name``, close it if ``pyplot`` holds it, and return ``name``."""
    fig.savefig(run_dir / name, dpi=100, bbox_inches="tight")
    if fig.canvas.manager is not None:  # made by pyplot (diagnostics' figures are not)
        _pyplot().close(fig)
    return name


def plot_samples(run_dir: Path, data: RunData, samples: np.ndarray) -> str:
    """``samples.png``: the data beside the model's draws (the first two coordinates).

    Args:
        run_dir: the run folder.
        data: the run's data.
        samples: model draws in data coordinates.

    Returns:
        The figure's file name.
    """
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
    shown = min(len(data.train), len(samples), 5000)
    for ax, points, title in ((axes[0], data.train, "data"), (axes[1], samples, "model (chains)")):
        ax.scatter(points[:shown, 0], points[:shown, 1] if points.shape[1] > 1 else np.zeros(shown), s=1, alpha=0.4)
        ax.set(title=f"{title}: {shown} points", xlabel="x₀")
    axes[0].set_ylabel("x₁" if data.train.shape[1] > 1 else "")
    return _save(fig, run_dir, "samples.png")


def plot_density(run_dir: Path, data: RunData, log_density: Callable[[np.ndarray], np.ndarray] | None) -> str | None:
    """``density.png``: the learned density on a grid around the data, for 2-D data.

    Args:
        run_dir: the run folder.
        data: the run's data.
        log_density: the normalised model's log density (numpy in and out).

    Returns:
        The figure's file name, or ``None`` (no density or not 2-D).
    """
    if log_density is None or data.train.shape[1] != 2:
        return None
    low, high = data.train.min(0), data.train.max(0)
    pad = 0.15 * (high - low)
    gx, gy = np.linspace(low[0] - pad[0], high[0] + pad[0], 200), np.linspace(low[1] - pad[1], high[1] + pad[1], 200)
    grid = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)
    values = np.exp(log_density(grid)).reshape(200, 200)
    fig, ax = _pyplot().subplots(figsize=(5.5, 4.5))
    mesh = ax.pcolormesh(gx, gy, values, shading="auto")
    fig.colorbar(mesh, ax=ax, label="p(x)")
    ax.set(title="learned density", xlabel="x₀", ylabel="x₁")
    return _save(fig, run_dir, "density.png")


def plot_training(run_dir: Path, history: dict[str, np.ndarray]) -> str:
    """``training.png``: :func:`ebmppl.diagnostics.plot_training` of the history, saved.

    Args:
        run_dir: the run folder.
        history: the training statistics per step.

    Returns:
        The figure's file name.
    """
    return _save(diagnostics.plot_training(history), run_dir, "training.png")


def plot_mode_weights(run_dir: Path, data: RunData, history: dict[str, np.ndarray]) -> str | None:
    """``mode_weights.png``: :func:`ebmppl.diagnostics.plot_mode_weights` against the true weights, saved.

    Args:
        run_dir: the run folder.
        data: the run's data.
        history: the training statistics per step.

    Returns:
        The figure's file name, or ``None`` (data without known modes).
    """
    if data.target is None or "mode_weights" not in history or not len(history["mode_weights"]):
        return None
    return _save(diagnostics.plot_mode_weights(history, data.target.weights), run_dir, "mode_weights.png")
