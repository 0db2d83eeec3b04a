"""Dual averaging of ``log(step size)`` toward an acceptance target (Hoffman and Gelman 2014), torch side.

The kernels' warm-up adapts the step size with it: :func:`init` near a step
size, :func:`update` after every warm-up iteration (a new state; the old one
is left as it was), :func:`current` for the next iteration and :func:`final`
(the averaged iterate) after the last. It mirrors
:mod:`ebmppl.numpyro.adaptation.dual_averaging`.

Example:
    >>> from ebmppl.pyro.adaptation import dual_averaging
    >>> state = dual_averaging.init(0.1)
    >>> for _ in range(50):
    ...     state = dual_averaging.update(state, accept_prob=0.2, target=0.8)  # too large: shrink
    >>> dual_averaging.final(state) < 0.1
    True
    >>> dual_averaging.next_step_size(state, 98, 100) == dual_averaging.current(state)  # not the last yet
    True
    >>> dual_averaging.next_step_size(state, 99, 100) == dual_averaging.final(state)
    True
"""

from __future__ import annotations

import copy
import math

import torch
from pyro.ops.dual_averaging import DualAveraging

__all__ = ["current", "final", "init", "next_step_size", "update"]


def init(step_size: float) -> DualAveraging:
    """The state started near ``step_size``."""
    return DualAveraging(prox_center=math.log(10.0 * float(step_size)))


def update(state: DualAveraging, accept_prob, target: float) -> DualAveraging:
    """One iteration's update from its acceptance probabilities ``accept_prob`` (their mean counts)."""
    state = copy.copy(state)
    state.step(target - float(torch.as_tensor(accept_prob).mean()))
    return state


def current(state: DualAveraging) -> float:
    """The step size of the next warm-up iteration."""
    return math.exp(state.get_state()[0])


def final(state: DualAveraging) -> float:
    """The averaged step size, for after warm-up."""
    return math.exp(state.get_state()[1])


def next_step_size(state: DualAveraging, it: int, num_warmup: int) -> float:
    """The step size after warm-up iteration ``it``: :func:`current`, or :func:`final` after the last."""
    return final(state) if it == num_warmup - 1 else current(state)
