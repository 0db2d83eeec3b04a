"""The training loop of a run: checkpoints on a schedule, Ctrl-C deferred to the end of a step.

Example:
    >>> import os, signal
    >>> from ebmppl.app.loop import Interrupted, training_loop
    >>> stats = dict(loss=0.0, energy_data=0.0, energy_negatives=0.0, global_accept_prob=1.0)
    >>> saved = []
    >>> training_loop(lambda: stats, saved.append, 0, 5, checkpoint_every=2, progress=False)
    >>> saved
    [2, 4, 5]
    >>> def step():  # Ctrl-C during the first step: the step ends, its state is saved
    ...     os.kill(os.getpid(), signal.SIGINT)
    ...     return stats
    >>> saved = []
    >>> try:
    ...     training_loop(step, saved.append, 0, 5, checkpoint_every=2, progress=False)
    ... except Interrupted as stop:
    ...     print(stop.steps_done, saved)
    1 [1]
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = ["Interrupted", "deferred_interrupt", "load_history", "save_history", "training_loop"]


class Interrupted(Exception):
    """Training was interrupted (Ctrl-C) after ``steps_done`` steps; the checkpoint is saved.

    Example:
        >>> Interrupted(7).steps_done
        7
    """

    def __init__(self, steps_done: int):
        super().__init__(f"interrupted after {steps_done} steps")
        self.steps_done = steps_done


_FLAGS: list[list] = []  # the flags of the open deferred_interrupt blocks, innermost last


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[list]:
    """Within this block Ctrl-C only sets a flag: the yielded list becomes non-empty.

    :func:`training_loop` inside the block stops at the end of its current
    step (or before its first one) when the flag is set.

    Example:
        >>> import os, signal
        >>> with deferred_interrupt() as interrupted:
        ...     os.kill(os.getpid(), signal.SIGINT)
        ...     print(bool(interrupted))
        True
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

    Args:
        step: one training update; returns its statistics (``loss``,
            ``energy_data``, ``energy_negatives``, ``global_accept_prob``), shown
            on the progress bar.
        save: saves the state, given the number of steps done.
        steps_done: the steps done before (a resumed run's).
        num_steps: the steps to reach.
        checkpoint_every: save after every this many steps.
        progress: show a progress bar.

    Raises:
        Interrupted: after Ctrl-C, once the state is saved.
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


def save_history(path: Path, history: dict[str, list]) -> None:
    """Write the per-step statistics atomically (``.npz``, one array per name).

    Written before the checkpoint, so it is at least as long as the state's steps.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "history.npz"
        >>> save_history(path, {"loss": [1.0, 0.5, 0.25]})
        >>> [float(x) for x in load_history(path, 2)["loss"]]
        [1.0, 0.5]
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.savez(handle, **{name: np.stack(values) for name, values in history.items()})
    os.replace(tmp, path)


def load_history(path: Path, steps: int) -> dict[str, list]:
    """The statistics of the first ``steps`` steps saved by :func:`save_history`.

    Raises:
        OSError: no such file.
        ValueError: a truncated or foreign file.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "history.npz"
        >>> save_history(path, {"loss": [1.0, 0.5, 0.25], "local_accept_prob": [0.7, 0.6, 0.65]})
        >>> history = load_history(path, 3)  # a checkpoint of 3 steps
        >>> sorted(history), len(history["loss"])
        (['local_accept_prob', 'loss'], 3)
    """
    with np.load(path) as saved:
        return {name: list(saved[name][:steps]) for name in saved.files}

