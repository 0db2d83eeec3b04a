"""A run's configuration: its format, the defaults of ``ebmppl train``, ``config.json``, the user's errors.

Example:
    >>> import tempfile
    >>> from ebmppl.app.config import RunError, read_config
    >>> try:
    ...     read_config(tempfile.mkdtemp())
    ... except RunError as err:
    ...     print(str(err).endswith("holds no ebmppl run (no config.json)"))
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ebmppl import __version__

if TYPE_CHECKING:  # pragma: no cover
    from ebmppl.app.data import RunData

__all__ = [
    "BASE_SCALE",
    "DEFAULTS",
    "RUN_FORMAT",
    "RunError",
    "new_config",
    "read_config",
    "read_trained_run",
    "write_json",
]

#: The ``format`` of every ``config.json`` this version writes and reads.
RUN_FORMAT = "ebmppl-run-v1"
#: The base is ``N(0, BASE_SCALE²)`` in standardised coordinates.
BASE_SCALE = 3.0
#: What ``ebmppl train`` uses unless told otherwise (both backends).
DEFAULTS = dict(
    steps=2000, batch_size=256, pool_size=4096, num_rounds=2, num_local_steps=20, num_particles=32,
    learning_rate=3e-3, lr_floor=0.1, ema_decay=0.99, width=64, depth=3, num_points=60_000,
    checkpoint_every=100, log_z_samples=20_000,
)


class RunError(Exception):
    """A problem with the user's input; the command line prints it as one line and exits with status 2.

    Example:
        >>> str(RunError("--num must be at least 1, got 0"))
        '--num must be at least 1, got 0'
    """


def new_config(spec: str, data: RunData, *, backend: str, method: str, seed: int, steps: int) -> dict:
    """The configuration of a new run on ``data`` (read from ``spec``, a built-in name or a file).

    Args:
        spec: what ``--data`` named.
        data: the run's data, as :func:`~ebmppl.app.data.prepare_data` made it.
        backend: ``"numpyro"`` or ``"pyro"``.
        method: how the trainer draws its negatives (see :data:`ebmppl.options.METHODS`).
        seed: the run's random seed.
        steps: the number of training updates.

    Returns:
        The dict written to ``config.json``: :data:`DEFAULTS` with these
        choices, the data's standardisation and ``finished=False``.

    Example:
        >>> from ebmppl.app.data import prepare_data
        >>> data = prepare_data("line_of_four", seed=0, num_points=1000)
        >>> config = new_config("line_of_four", data, backend="numpyro", method="flow", seed=0, steps=10)
        >>> config["data_name"], config["dim"], config["steps"], config["finished"]
        ('line_of_four', 2, 10, False)
    """
    return dict(
        format=RUN_FORMAT, version=__version__, backend=backend, method=method, data=spec,
        data_name=spec if data.target is not None else None,  # a built-in set (a file has no known target)
        seed=seed, dim=int(data.train.shape[1]), loc=data.loc.tolist(), scale=data.scale.tolist(),
        **{**DEFAULTS, "steps": steps}, finished=False,
    )


def write_json(path: Path, content: dict) -> None:
    """Write ``content`` to ``path`` atomically (a temporary file, then a rename).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "metrics.json"
        >>> write_json(path, {"steps": 3})
        >>> path.read_text()
        '{\\n  "steps": 3\\n}\\n'
    """
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


def read_trained_run(run_dir: str | os.PathLike, backend: str) -> tuple[dict, float]:
    """The configuration of a finished run of ``backend``, and its ``log Z`` estimate (from ``metrics.json``).

    Raises:
        RunError: no run in ``run_dir``, a run of the other backend, or an
            unfinished one.

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> run = Path(tempfile.mkdtemp())
        >>> write_json(run / "config.json", {"format": RUN_FORMAT, "backend": "numpyro"})
        >>> try:
        ...     read_trained_run(run, "pyro")
        ... except RunError as err:
        ...     print(str(err).split(": ")[-1])
        use ebmppl.numpyro.load_potential
        >>> write_json(run / "metrics.json", {"log_z": 1.5})
        >>> read_trained_run(run, "numpyro")[1]
        1.5
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config["backend"] != backend:
        raise RunError(f"{str(run_dir)!r} was trained with the {config['backend']} backend: use "
                       f"ebmppl.{config['backend']}.load_potential")
    if not (run_dir / "metrics.json").is_file():
        raise RunError(f"the run in {str(run_dir)!r} has not finished training (no metrics.json); resume it first")
    return config, json.loads((run_dir / "metrics.json").read_text())["log_z"]
