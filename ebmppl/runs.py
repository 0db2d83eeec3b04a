"""Training runs on disk: data, configuration, the training loop and the report (backend-neutral).

A run folder holds ``config.json``, the data it was trained on
(``train.npy``, ``test.npy``), the backend's checkpoint, ``history.npz``,
``metrics.json`` and the report's figures. The backends
(:mod:`ebmppl.numpyro.runs`, :mod:`ebmppl.pyro.runs`) build the model and
train it; this module does everything else. The energy network sees
standardised coordinates ``(x - loc) / scale``; the model is
``p(x) ∝ exp(-E((x - loc) / scale)) · N(x; loc, (3 scale)²)``.

Example:
    >>> from ebmppl.runs import prepare_data
    >>> data = prepare_data("line_of_four", seed=0, num_points=1000)
    >>> data.train.shape, data.test.shape, data.target is not None
    ((900, 2), (100, 2), True)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ebmppl import datasets

__all__ = [
    "BUILTIN_DATA",
    "DEFAULT_DATA",
    "RUN_FORMAT",
    "Interrupted",
    "RunData",
    "RunError",
    "load_run_data",
    "prepare_data",
    "read_config",
    "training_loop",
    "write_json",
    "write_report",
]

RUN_FORMAT = "ebmppl-run-v1"
BUILTIN_DATA: dict[str, Callable] = {
    "line_of_four": datasets.line_of_four,
    "two_modes": datasets.two_modes,
    "eight_gaussians": datasets.eight_gaussians,
    "rings": datasets.rings,
    "four_mode_mixture": datasets.four_mode_mixture,
    "bimodal_pair": datasets.bimodal_pair,
}
DEFAULT_DATA = "line_of_four"
BASE_SCALE = 3.0  # the base is N(0, 3²) in standardised coordinates

# what `ebmppl train` uses unless told otherwise (both backends)
DEFAULTS = dict(
    steps=2000, batch_size=256, pool_size=4096, num_rounds=2, num_local_steps=20, num_particles=32,
    learning_rate=3e-3, lr_floor=0.1, ema_decay=0.99, width=64, depth=3, num_points=60_000,
    checkpoint_every=100, log_z_samples=20_000,
)


class RunError(Exception):
    """A problem with the user's input; the command line prints it as one line."""


class Interrupted(Exception):
    """Training was interrupted (Ctrl-C) after ``steps_done`` steps; the checkpoint is saved."""

    def __init__(self, steps_done: int):
        super().__init__(f"interrupted after {steps_done} steps")
        self.steps_done = steps_done


@dataclass
class RunData:
    """The data of a run: training and test points, and the known target for built-in sets."""

    train: np.ndarray
    test: np.ndarray
    target: Any  # a datasets.GaussianMixture / Rings, or None for a file
    loc: np.ndarray
    scale: np.ndarray


def prepare_data(spec: str | None, seed: int, num_points: int = DEFAULTS["num_points"]) -> RunData:
    """Built-in data (by name, ``num_points`` draws plus a tenth for testing) or a file's points (a 90/10 split).

    Raises:
        RunError: an unknown name, a missing or bad file, too few points, a
            constant coordinate.
    """
    spec = DEFAULT_DATA if spec is None else spec
    rng = np.random.default_rng(seed)
    target = None
    if spec in BUILTIN_DATA:
        target = BUILTIN_DATA[spec]()
        train = target.sample(int(num_points * 0.9), rng)
        test = target.sample(num_points - len(train), rng)
    elif Path(spec).suffix.lower() in (".npy", ".csv") or Path(spec).exists():
        try:
            points = datasets.load_points(spec)
        except (FileNotFoundError, ValueError) as err:
            raise RunError(str(err)) from None
        if len(points) < 20:
            raise RunError(f"data file {spec!r} has {len(points)} points; at least 20 are needed")
        points = points[rng.permutation(len(points))]
        cut = int(round(0.9 * len(points)))
        train, test = points[:cut], points[cut:]
    else:
        raise RunError(f"unknown data {spec!r}: give a .npy or .csv file or one of {', '.join(BUILTIN_DATA)}")
    loc, scale = train.mean(0), train.std(0)
    constant = np.flatnonzero(scale < 1e-8 * (1.0 + np.abs(loc)))
    if constant.size:
        raise RunError(f"data {spec!r}: coordinate(s) {constant.tolist()} are constant; drop them")
    return RunData(train.astype(np.float32), test.astype(np.float32), target, loc, scale)


def load_run_data(run_dir: Path, config: dict) -> RunData:
    """The data a run was trained on, as saved in its folder."""
    target = BUILTIN_DATA[config["data_name"]]() if config.get("data_name") else None
    try:
        train, test = np.load(run_dir / "train.npy"), np.load(run_dir / "test.npy")
    except (OSError, ValueError) as err:
        raise RunError(f"the data of the run in {str(run_dir)!r} could not be read ({err})") from None
    return RunData(train, test, target, np.asarray(config["loc"]), np.asarray(config["scale"]))


def write_json(path: Path, content: dict) -> None:
    """Write ``content`` to ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's ``config.json``.

    Raises:
        RunError: no such folder, no run in it, or a run of another kind.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {str(run_dir)!r} does not exist")
    path = run_dir / "config.json"
    if not path.is_file():
        raise RunError(f"{str(run_dir)!r} holds no ebmppl run (no config.json)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{str(path)!r} is not a valid ebmppl run configuration ({err})") from None
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise RunError(f"{str(run_dir)!r} holds no ebmppl run (config.json of another kind)")
    return config


_FLAGS: list[list] = []  # the flags of the open deferred_interrupt blocks


@contextlib.contextmanager
def deferred_interrupt():
    """Within this block Ctrl-C only sets a flag: the yielded list becomes non-empty.

    :func:`training_loop` inside the block stops at the end of its current
    step (or before its first one) when the flag is set.
    """
    interrupted: list = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    _FLAGS.append(interrupted)
    try:
        yield interrupted
    finally:
        _FLAGS.pop()
        signal.signal(signal.SIGINT, previous)


def training_loop(step: Callable[[], dict], save: Callable[[int], None], steps_done: int, num_steps: int,
                  checkpoint_every: int, progress: bool = True) -> None:
    """Call ``step`` until ``num_steps`` are done, saving every ``checkpoint_every`` and at the end.

    Ctrl-C is deferred to the end of the current step, so the state saved is
    always whole; then :class:`Interrupted` is raised.
    """
    with contextlib.ExitStack() as stack:
        interrupted = _FLAGS[-1] if _FLAGS else stack.enter_context(deferred_interrupt())
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = stack.enter_context(tqdm(total=num_steps, initial=steps_done, desc="training"))
        while steps_done < num_steps and not interrupted:
            stats = step()
            steps_done += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}",
                                gap=f"{stats['energy_data'] - stats['energy_negatives']:.3f}",
                                global_acc=f"{stats['global_accept_prob']:.2f}")
            if steps_done % checkpoint_every == 0 and steps_done < num_steps:
                save(steps_done)
        save(steps_done)
    if interrupted:
        raise Interrupted(steps_done)


def mode_weights_by_importance(target, x: np.ndarray, log_w: np.ndarray) -> list[float]:
    """The model's mode weights from flow draws ``x`` with log importance weights ``log_w``."""
    w = np.exp(log_w - log_w.max())
    weights = np.bincount(target.assign(x), weights=w, minlength=len(target.weights))
    return (weights / weights.sum()).tolist()


def write_report(run_dir: Path, data: RunData, samples: np.ndarray, history: dict,
                 log_density: Callable[[np.ndarray], np.ndarray] | None) -> list[str]:
    """The report's figures; returns their file names.

    ``samples``: model draws (original coordinates); ``log_density``: the
    normalised model density (numpy in and out) for the 2-D density plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
    shown = min(len(data.train), len(samples), 5000)
    for ax, points, title in ((axes[0], data.train, "data"), (axes[1], samples, "model (chains)")):
        ax.scatter(points[:shown, 0], points[:shown, 1] if points.shape[1] > 1 else np.zeros(shown), s=1, alpha=0.4)
        ax.set_title(title)
    fig.savefig(run_dir / "samples.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    names.append("samples.png")

    if log_density is not None and data.train.shape[1] == 2:
        low, high = data.train.min(0), data.train.max(0)
        pad = 0.15 * (high - low)
        gx, gy = np.linspace(low[0] - pad[0], high[0] + pad[0], 200), np.linspace(low[1] - pad[1], high[1] + pad[1], 200)
        grid = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)
        values = np.exp(log_density(grid)).reshape(200, 200)
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        mesh = ax.pcolormesh(gx, gy, values, shading="auto")
        fig.colorbar(mesh, ax=ax, label="p(x)")
        ax.set_title("learned density")
        fig.savefig(run_dir / "density.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        names.append("density.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = np.arange(1, len(history["loss"]) + 1)
    axes[0].plot(steps, history["energy_data"], label="E(data)", lw=0.7)
    axes[0].plot(steps, history["energy_negatives"], label="E(negatives)", lw=0.7)
    axes[0].set_xlabel("step")
    axes[0].legend()
    axes[1].plot(steps, history["global_accept_prob"], label="global (i-SIR)", lw=0.7)
    axes[1].plot(steps, history["local_accept_prob"], label="local (MALA)", lw=0.7)
    axes[1].set_xlabel("step")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend()
    fig.savefig(run_dir / "training.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    names.append("training.png")

    if data.target is not None and "mode_weights" in history and len(history["mode_weights"]):
        weights = np.asarray(history["mode_weights"])
        window = max(1, len(weights) // 50)
        smooth = np.stack([np.convolve(w, np.ones(window) / window, mode="valid") for w in weights.T], -1)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, true in enumerate(data.target.weights):
            line, = ax.plot(np.arange(len(smooth)) + window, smooth[:, k], lw=0.8, label=f"mode {k}")
            ax.axhline(true, color=line.get_color(), ls="--", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("negatives' mode weight")
        ax.set_title("mode weights over training (dashed: true)")
        ax.legend(fontsize=7)
        fig.savefig(run_dir / "mode_weights.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        names.append("mode_weights.png")
    return names


def min_bulk_ess(draws: np.ndarray) -> float:
    """Smallest bulk ESS over coordinates of ``draws`` shaped ``(chains, draws, D)``."""
    import arviz as az

    return float(az.ess(az.convert_to_dataset({"x": np.asarray(draws)}), method="bulk")["x"].min())


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity."""
    return float(value) if math.isfinite(value) else None
