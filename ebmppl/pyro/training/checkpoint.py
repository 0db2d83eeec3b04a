"""Checkpoints of ``EBMTrainer``: a :class:`TrainState` in a ``torch.save`` file, written atomically (Pyro).

The file holds the state's fields exactly (the RNG state included), so a run
resumed from it continues bitwise as the uninterrupted run would. The
format is ``ebmppl-pyro-train-state-v2``: v2 saves the state alone (v1 saved
the trainer's attributes and its history); a v1 file is refused by name.
Loading unpickles the file: load only checkpoints you trust.

Example:
    >>> import tempfile, pathlib, torch
    >>> from ebmppl.pyro.training import TrainState, load_checkpoint, save_checkpoint
    >>> state = TrainState(0, {"w": torch.ones(2)}, {"w": torch.ones(2)}, {}, {}, {}, torch.zeros(4, 2), 0.1, 0, {})
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.pt"
    >>> save_checkpoint(path, state)
    >>> load_checkpoint(path, like=state).ebm_params
    {'w': tensor([1., 1.])}
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from ebmppl.pyro.training.state import TrainState

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]

#: The format written by :func:`save_checkpoint` (and the only one read).
CHECKPOINT_FORMAT = "ebmppl-pyro-train-state-v2"


def save_checkpoint(path: str | os.PathLike, state: TrainState) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file, then a rename.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from ebmppl.pyro.training import TrainState
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run" / "state.pt"  # folders are made
        >>> save_checkpoint(path, TrainState(0, {}, {}, {}, {}, {}, torch.zeros(4, 2), 0.1, 0, {}))
        >>> path.is_file()
        True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "state": state._asdict()}, buffer)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, like: TrainState) -> TrainState:
    """Read a state written by :func:`save_checkpoint`, checked against ``like``.

    Args:
        path: the file.
        like: a state of the same trainer (:meth:`~ebmppl.pyro.EBMTrainer.load`
            makes it from the model): the checkpoint must have its
            parameters' names and shapes, its flow's, its optimizers'
            settings and its pool's shape.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated or foreign file, one of an older format, or a
            state that does not fit this trainer (another model, flow or
            optimizer).

    Example:
        >>> import tempfile, pathlib, torch
        >>> from ebmppl.pyro.training import TrainState
        >>> state = TrainState(0, {"w": torch.ones(2)}, {}, {}, {}, {}, torch.zeros(4, 2), 0.1, 0, {})
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.pt"
        >>> save_checkpoint(path, state)
        >>> load_checkpoint(path, like=state._replace(ebm_params={"w": torch.ones(3)}))
        Traceback (most recent call last):
        ...
        ValueError: the checkpoint does not fit this trainer: its energy has other parameters (another model?)
    """
    state = _read(Path(path))
    if _shapes(state.ebm_params) != _shapes(like.ebm_params):
        raise ValueError("the checkpoint does not fit this trainer: its energy has other parameters (another model?)")
    if _shapes(state.flow_params) != _shapes(like.flow_params):
        raise ValueError("the checkpoint does not fit this trainer: its flow has other parameters (another flow?)")
    for name in ("ebm_opt_state", "flow_opt_state"):
        if _settings(getattr(state, name)) != _settings(getattr(like, name)):
            raise ValueError(
                f"the checkpoint does not fit this trainer: its {name} has other settings (another optimizer?)"
            )
    if state.pool.shape != like.pool.shape:
        raise ValueError(f"the checkpoint does not fit this trainer: its pool has shape {tuple(state.pool.shape)}, "
                         f"this trainer's {tuple(like.pool.shape)}")
    return state


def _read(path: Path) -> TrainState:
    """The state in a checkpoint file, its format checked."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        contents = torch.load(path, weights_only=False)
    except Exception as err:  # truncated zip, pickle errors...
        raise ValueError(f"checkpoint {str(path)!r} is truncated or not an ebmppl checkpoint ({err})") from err
    written = contents.get("format") if isinstance(contents, dict) else None
    if written == "ebmppl-pyro-train-state-v1":
        raise ValueError(f"checkpoint {str(path)!r} has the format of an older ebmppl ({written}); "
                         f"this version reads {CHECKPOINT_FORMAT}")
    if written != CHECKPOINT_FORMAT or set(contents.get("state", ())) != set(TrainState._fields):
        raise ValueError(f"{str(path)!r} is not an ebmppl Pyro training checkpoint")
    return TrainState(**contents["state"])


def _shapes(tensors: dict) -> dict:
    return {name: tuple(value.shape) for name, value in tensors.items()}


def _settings(optimizer_state: dict) -> list:
    """An optimizer's ``state_dict`` reduced to what must match: its groups' setting names and sizes."""
    return [(sorted(k for k in group if k != "params"), len(group["params"]))
            for group in optimizer_state.get("param_groups", ())]
