"""Checkpoints of ``EBMTrainer``: a :class:`TrainState` in an ``.npz`` file, written atomically (NumPyro).

Every leaf is saved exactly (keys as their raw data and implementation), so
a run resumed from the file continues bitwise as the uninterrupted run
would. The format is ``ebmppl-numpyro-train-state-v2``: v2 added the
state's failure counter; a v1 file is refused by name.

Example:
    >>> import jax, tempfile, pathlib
    >>> from ebmppl.numpyro.training import load_checkpoint, save_checkpoint
    >>> state = {"step": jax.numpy.arange(3), "key": jax.random.key(0)}  # any pytree
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.npz"
    >>> save_checkpoint(path, state)
    >>> load_checkpoint(path, like=state)["step"]
    Array([0, 1, 2], dtype=int32)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]

#: The format written by :func:`save_checkpoint` (and the only one read).
CHECKPOINT_FORMAT = "ebmppl-numpyro-train-state-v2"


def save_checkpoint(path: str | os.PathLike, state: Any) -> None:
    """Write ``state`` (any pytree of arrays and keys) to ``path`` atomically: a temporary file, then a rename.

    Example:
        >>> import jax, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run" / "state.npz"  # folders are made
        >>> save_checkpoint(path, {"w": jax.numpy.ones(2)})
        >>> path.is_file()
        True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays, key_impls = {}, []
    for i, leaf in enumerate(jax.tree.leaves(state)):
        is_key = jnp.issubdtype(jnp.asarray(leaf).dtype, jax.dtypes.prng_key)
        key_impls.append(str(jax.random.key_impl(leaf)) if is_key else "")
        arrays[f"leaf_{i}"] = np.asarray(jax.random.key_data(leaf) if is_key else leaf)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.savez(handle, __format__=np.asarray(CHECKPOINT_FORMAT),
                 __treedef__=np.asarray(str(jax.tree.structure(state))),
                 __key_impls__=np.asarray(key_impls, dtype=str), **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, like: Any) -> Any:
    """Read a state written by :func:`save_checkpoint`, checked against ``like``.

    Args:
        path: the file.
        like: a state of the same structure, shapes and dtypes (arrays or
            ``jax.ShapeDtypeStruct`` s, e.g. ``jax.eval_shape`` of one);
            :meth:`~ebmppl.numpyro.EBMTrainer.load` makes it from the model.

    Returns:
        The state, with ``like``'s structure.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated or foreign file, one of an older format, or a
            state of another structure (another model, flow or optimizer).

    Example:
        >>> import jax, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.npz"
        >>> save_checkpoint(path, {"w": jax.numpy.ones(2)})
        >>> load_checkpoint(path, like={"w": jax.ShapeDtypeStruct((3,), "float32")})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: checkpoint '...state.npz': leaf 0 has shape (2,) and dtype float32, this trainer's ...
    """
    contents = _read(Path(path))
    leaves, treedef = jax.tree.flatten(like)
    if str(contents["__treedef__"]) != str(treedef):
        raise ValueError(
            f"checkpoint {str(path)!r} holds a state of another structure than this trainer's "
            "(another model, flow or optimizer)"
        )
    restored = [_leaf(path, i, leaf, contents[f"leaf_{i}"], str(impl))
                for i, (leaf, impl) in enumerate(zip(leaves, contents["__key_impls__"]))]
    return jax.tree.unflatten(treedef, restored)


def _read(path: Path) -> dict:
    """The arrays of a checkpoint file, its format checked."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {name: archive[name] for name in archive.files}
    except Exception as err:  # zipfile.BadZipFile, EOFError, ValueError, OSError...
        raise ValueError(f"checkpoint {str(path)!r} is truncated or not an ebmppl checkpoint ({err})") from err
    written = str(contents.get("__format__", ""))
    if written == "ebmppl-numpyro-train-state-v1":
        raise ValueError(f"checkpoint {str(path)!r} has the format of an older ebmppl ({written}, without the "
                         f"failure counter); this version reads {CHECKPOINT_FORMAT}")
    if written != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not an ebmppl NumPyro training checkpoint")
    return contents


def _leaf(path, i: int, like, value: np.ndarray, impl: str):
    """One saved leaf as ``like`` has it: a key wrapped back, an array checked for shape and dtype."""
    if impl:
        value = jax.random.wrap_key_data(value, impl=impl)
    if not hasattr(like, "dtype"):  # a Python number
        like = jnp.asarray(like)
    shape, dtype = tuple(like.shape), like.dtype
    if value.shape != shape or value.dtype != dtype:
        raise ValueError(
            f"checkpoint {str(path)!r}: leaf {i} has shape {value.shape} and dtype {value.dtype}, "
            f"this trainer's state has {shape} and {dtype}"
        )
    return value if impl else jnp.asarray(value)
