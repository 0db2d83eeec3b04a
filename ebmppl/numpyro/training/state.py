"""What one update of ``EBMTrainer`` carries, and what a run returns (NumPyro).

Example:
    >>> from ebmppl.numpyro.training import TrainResult, TrainState
    >>> TrainState._fields[-3:], TrainResult._fields
    (('step_size', 'failures', 'rng_key'), ('state', 'params', 'history'))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from ebmppl._repr import html_table, text, train_result_rows

__all__ = ["TrainResult", "TrainState"]


class TrainState(NamedTuple):
    """Everything an update needs; a checkpoint is this state.

    Attributes:
        step: updates done (skipped ones included).
        ebm_params: the energy's parameters (the model's ``numpyro.param`` sites).
        ema_params: their exponential moving average (``ema_decay``; the same
            arrays as ``ebm_params`` without it).
        ebm_opt_state: the optimizer's state for them.
        flow_params: the flow's trainable arrays (``"neutra"``: the frozen backbone).
        flow_opt_state: the optimizer's state for them.
        pool: shape ``(pool_size, D)``, the persistent chains.
        step_size: the MALA step size, adapted toward ``target_accept_prob``.
        failures: updates skipped in a row for a non-finite loss or gradient
            (an ``int32`` scalar): a resumed run stops at ``max_failures`` as
            the uninterrupted one would.
        rng_key: the JAX key of the next update.

    Example:
        >>> from ebmppl.numpyro.training import TrainState
        >>> TrainState._fields[:3]
        ('step', 'ebm_params', 'ema_params')
    """

    step: jax.Array
    ebm_params: Any
    ema_params: Any
    ebm_opt_state: Any
    flow_params: Any
    flow_opt_state: Any
    pool: jax.Array
    step_size: jax.Array
    failures: jax.Array
    rng_key: jax.Array


class _TrainResultFields(NamedTuple):
    state: TrainState
    params: Any
    history: dict


class TrainResult(_TrainResultFields):
    """What :meth:`~ebmppl.numpyro.EBMTrainer.run` returns.

    Attributes:
        state: the final :class:`TrainState` (resume from it with ``run(..., init_state=state)``).
        params: the trained energy's parameters: their moving average when
            the trainer has ``ema_decay``, else the last iterate; pass them to
            :meth:`~ebmppl.numpyro.EBMTrainer.potential`.
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
        >>> from ebmppl.numpyro.training import TrainResult
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
        return train_result_rows(self, sum(int(np.size(leaf)) for leaf in jax.tree.leaves(self.params)))

    def __repr__(self) -> str:
        return text("TrainResult", self._rows())

    def _repr_html_(self) -> str:
        return html_table("TrainResult", self._rows())
