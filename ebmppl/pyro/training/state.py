"""What one update of ``EBMTrainer`` carries, and what a run returns (Pyro).

The fields and their meaning are those of the NumPyro ``TrainState``; the
state holds its own copies of everything, so an old state stays valid after
later updates, can be saved, and can be updated again (a branch of the run).

The modules, Pyro's parameter store and the torch optimizers are the
trainer's workspace, not the state: the energy's network (registered with
``pyro.module``) and the flow module hold the parameters of the state that
the trainer last made, loaded or updated. :meth:`EBMTrainer.update` copies a
state into the workspace when it is another one, steps the workspace, and
copies the result out into the new state.

Example:
    >>> from ebmppl.pyro.training import TrainResult, TrainState
    >>> TrainState._fields[-3:], TrainResult._fields
    (('step_size', 'failures', 'rng_state'), ('state', 'params', 'history'))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ebmppl._repr import html_table, text, train_result_rows

__all__ = ["TrainResult", "TrainState"]


class TrainState(NamedTuple):
    """Everything an update needs; a checkpoint is this state (``torch.save`` of its fields).

    Attributes:
        step: updates done (skipped ones included), an int.
        ebm_params: the energy's parameters, ``{name: tensor}`` by their names
            in Pyro's parameter store (unconstrained values), copies.
        ema_params: their exponential moving average (``ema_decay``; the same
            tensors as ``ebm_params`` without it).
        ebm_opt_state: the energy's torch optimizer's ``state_dict()``, a copy.
        flow_params: the flow module's ``state_dict()`` (parameters and
            buffers), a copy (``"neutra"``: the frozen backbone).
        flow_opt_state: the flow's torch optimizer's ``state_dict()``, a copy.
        pool: shape ``(pool_size, D)``, the persistent chains.
        step_size: the MALA step size, adapted toward ``target_accept_prob``, a float.
        failures: updates skipped in a row for a non-finite loss or gradient,
            an int: a resumed run stops at ``max_failures`` as the
            uninterrupted one would.
        rng_state: Pyro's RNG state (``pyro.util.get_rng_state()``: torch's CPU
            generator, Python's ``random``, NumPy's) that the next update
            starts from.

    Example:
        >>> from ebmppl.pyro.training import TrainState
        >>> TrainState._fields[:3]
        ('step', 'ebm_params', 'ema_params')
    """

    step: int
    ebm_params: dict[str, torch.Tensor]
    ema_params: dict[str, torch.Tensor]
    ebm_opt_state: dict
    flow_params: dict[str, torch.Tensor]
    flow_opt_state: dict
    pool: torch.Tensor
    step_size: float
    failures: int
    rng_state: dict


class _TrainResultFields(NamedTuple):
    state: TrainState
    params: Any
    history: dict


class TrainResult(_TrainResultFields):
    """What :meth:`~ebmppl.pyro.EBMTrainer.run` returns.

    Attributes:
        state: the final :class:`TrainState` (resume from it with ``run(..., init_state=state)``).
        params: the trained energy's parameters, ``{name: tensor}``: their
            moving average when the trainer has ``ema_decay``, else the last
            iterate; pass them to :meth:`~ebmppl.pyro.EBMTrainer.potential`.
        history: per-update ``loss``, ``energy_data``, ``energy_negatives``,
            ``global_accept_prob``, ``local_accept_prob`` (and
            ``mode_weights``, shape ``(num_steps, K)``, when mode centres were
            given), each a numpy array.
        method: the trainer's ``method`` (``None`` for a result made by
            hand); an attribute, not a field: ``state, params, history =
            result`` unpacks as it always did.

    It prints (and shows as a table in a notebook) the method, the updates
    done, how many numbers ``params`` holds and the last value of each
    history entry, never an array.

    Example:
        >>> import numpy as np
        >>> from ebmppl.pyro.training import TrainResult
        >>> result = TrainResult(state=None, params={}, history={"loss": np.array([0.5, 0.25])}, method="flow")
        >>> result
        TrainResult(method='flow', steps=2, params=0, loss=0.25)
        >>> state, params, history = result
        >>> params, result._replace(params={}).method
        ({}, 'flow')
    """

    method: str | None = None  # the class's default; a result made by the trainer has its own

    def __new__(cls, state: TrainState, params: Any, history: dict, method: str | None = None):
        result = super().__new__(cls, state, params, history)
        result.method = method
        return result

    def _replace(self, **changes) -> "TrainResult":
        replaced = super()._replace(**changes)
        replaced.method = self.method
        return replaced

    def _rows(self) -> list[tuple[str, str]]:
        return train_result_rows(self, sum(int(value.numel()) for value in self.params.values()))

    def __repr__(self) -> str:
        return text("TrainResult", self._rows())

    def _repr_html_(self) -> str:
        return html_table("TrainResult", self._rows())
