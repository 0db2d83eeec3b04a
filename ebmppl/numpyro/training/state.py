"""What one update of ``EBMTrainer`` carries, and what a run returns (NumPyro).

Example:
    >>> from ebmppl.numpyro.training import TrainResult, TrainState
    >>> TrainState._fields[-3:], TrainResult._fields
    (('step_size', 'failures', 'rng_key'), ('state', 'params', 'history'))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

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


class TrainResult(NamedTuple):
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

    Example:
        >>> from ebmppl.numpyro.training import TrainResult
        >>> TrainResult(state=None, params={}, history={}).params
        {}
    """

    state: TrainState
    params: Any
    history: dict
