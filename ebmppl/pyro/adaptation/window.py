"""The window of the last warm-up positions, a ring buffer ``(W, C, D)`` that the flow fits read (torch).

Iteration ``it`` (0-based) is stored at row ``it % W``. It mirrors
:mod:`ebmppl.numpyro.adaptation.window`.

Example:
    >>> import torch
    >>> from ebmppl.pyro.adaptation import window
    >>> buffer = window.init(4, torch.zeros(2, 1))
    >>> for it in range(6):
    ...     buffer = window.update(buffer, it, torch.full((2, 1), float(it)))
    >>> window.recent(buffer, 5)[:, 0].tolist()  # the later half: iterations 5 and 4
    [5.0, 5.0, 4.0, 4.0]
"""

from __future__ import annotations

import torch

__all__ = ["init", "recent", "update"]


def init(size: int, position: torch.Tensor) -> torch.Tensor:
    """An empty window of ``size`` iterations for walkers shaped like ``position`` ``(C, D)``."""
    return position.new_zeros((size,) + tuple(position.shape))


def update(window: torch.Tensor, it: int, position: torch.Tensor) -> torch.Tensor:
    """A new window with iteration ``it``'s ``position`` stored (the old one is left as it was)."""
    window = window.clone()
    window[it % window.shape[0]] = position
    return window


def recent(window: torch.Tensor, it: int) -> torch.Tensor:
    """The later half of the window, the iterations ``it, it - 1, ...``, flattened to ``(n, D)``."""
    size = window.shape[0]
    rows = [(it - k) % size for k in range((size + 1) // 2)]
    return window[rows].reshape(-1, window.shape[-1])
