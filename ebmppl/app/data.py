"""The data of a run: built-in synthetic sets or a user's file, split and standardised.

Example:
    >>> from ebmppl.app.data import prepare_data
    >>> data = prepare_data("line_of_four", seed=0, num_points=1000)
    >>> data.train.shape, data.test.shape, data.target is not None
    ((900, 2), (100, 2), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ebmppl import datasets
from ebmppl.app.config import DEFAULTS, RunError

__all__ = ["BUILTIN_DATA", "DEFAULT_DATA", "RunData", "load_run_data", "prepare_data", "save_run_data"]

#: The synthetic sets ``--data`` may name, each with its known target.
BUILTIN_DATA: dict[str, Callable] = {
    "line_of_four": datasets.line_of_four,
    "two_modes": datasets.two_modes,
    "eight_gaussians": datasets.eight_gaussians,
    "rings": datasets.rings,
    "four_mode_mixture": datasets.four_mode_mixture,
    "bimodal_pair": datasets.bimodal_pair,
}
#: What ``ebmppl train`` trains on without ``--data``.
DEFAULT_DATA = "line_of_four"


@dataclass
class RunData:
    """The data of a run: training and test points, and the known target for built-in sets.

    Attributes:
        train: the training points, ``(n, D)``.
        test: the held-out points, ``(m, D)``.
        target: the built-in set's distribution (a ``datasets.GaussianMixture``
            or ``datasets.Rings``), or ``None`` for a file.
        loc: the training points' mean per coordinate.
        scale: the training points' standard deviation per coordinate.

    Example:
        >>> import numpy as np
        >>> data = RunData(np.zeros((9, 2)), np.zeros((1, 2)), None, np.zeros(2), np.ones(2))
        >>> data.train.shape, data.target
        ((9, 2), None)
    """

    train: np.ndarray
    test: np.ndarray
    target: Any
    loc: np.ndarray
    scale: np.ndarray


def prepare_data(spec: str | None, seed: int, num_points: int = DEFAULTS["num_points"]) -> RunData:
    """Built-in data (by name, ``num_points`` draws, a tenth of them for testing) or a file's points (a 90/10 split).

    Args:
        spec: a built-in name (:data:`BUILTIN_DATA`), a ``.npy`` or ``.csv``
            file, or ``None`` for :data:`DEFAULT_DATA`.
        seed: seeds the draws or the file's shuffle.
        num_points: the number of draws of a built-in set.

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
        train, test = _split_file(spec, rng)
    else:
        raise RunError(f"unknown data {spec!r}: give a .npy or .csv file or one of {', '.join(BUILTIN_DATA)}")
    loc, scale = train.mean(0), train.std(0)
    constant = np.flatnonzero(scale < 1e-8 * (1.0 + np.abs(loc)))
    if constant.size:
        raise RunError(f"data {spec!r}: coordinate(s) {constant.tolist()} are constant; drop them")
    return RunData(train.astype(np.float32), test.astype(np.float32), target, loc, scale)


def _split_file(spec: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A file's points, shuffled and split 90/10."""
    try:
        points = datasets.load_points(spec)
    except (FileNotFoundError, ValueError) as err:
        raise RunError(str(err)) from None
    if len(points) < 20:
        raise RunError(f"data file {spec!r} has {len(points)} points; at least 20 are needed")
    points = points[rng.permutation(len(points))]
    cut = int(round(0.9 * len(points)))
    return points[:cut], points[cut:]


def save_run_data(run_dir: Path, data: RunData) -> None:
    """Save the training and test points in the run folder (``train.npy``, ``test.npy``).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> save_run_data(run_dir, prepare_data("line_of_four", seed=0, num_points=100))
        >>> sorted(path.name for path in run_dir.iterdir())
        ['test.npy', 'train.npy']
    """
    np.save(run_dir / "train.npy", data.train)
    np.save(run_dir / "test.npy", data.test)


def load_run_data(run_dir: Path, config: dict) -> RunData:
    """The data a run was trained on, as saved in its folder.

    Raises:
        RunError: the saved points cannot be read.
    """
    target = BUILTIN_DATA[config["data_name"]]() if config.get("data_name") else None
    try:
        train, test = np.load(run_dir / "train.npy"), np.load(run_dir / "test.npy")
    except (OSError, ValueError) as err:
        raise RunError(f"the data of the run in {str(run_dir)!r} could not be read ({err})") from None
    return RunData(train, test, target, np.asarray(config["loc"]), np.asarray(config["scale"]))
