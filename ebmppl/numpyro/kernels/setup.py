"""What the NumPyro kernels share when they start: initial points, the flat target, the flow.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.kernels.setup import build_flow
    >>> from ebmppl.numpyro.flows import default_flow
    >>> from ebmppl.schedule import WarmupSchedule
    >>> flow, fresh, ready = build_flow(None, default_flow, jax.random.key(0), 2, WarmupSchedule.default(100))
    >>> ready
    False
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import initialize_model
from numpyro.util import identity, is_prng_key

from ebmppl._repr import html_table, kernel_rows, text
from ebmppl.mixing import warn_if_not_mixed
from ebmppl.numpyro.flows import check_flow, partition_flow
from ebmppl.numpyro.keys import typed_key
from ebmppl.options import check_target
from ebmppl.schedule import WarmupSchedule

__all__ = ["EnsembleKernel", "RunParts", "Walkers", "build_flow", "check_initial_energy", "check_vectorized", "flat_logdensity", "initial_params",
           "warn_at_end_of_warmup"]


class Walkers(NamedTuple):
    """What a kernel's ``init`` starts from.

    Attributes:
        key: the key carried in the state (in the style the host gave).
        init_key, flow_key: typed keys for the model's inspection and the flow.
        init_params: the initial unconstrained parameters (leading axis: chains).
        logdensity: the log density of one flat point.
        unravel: flat point -> the model's pytree.
        position: shape ``(C, D)``, the flat initial positions.
    """

    key: jax.Array
    init_key: jax.Array
    flow_key: jax.Array
    init_params: Any
    logdensity: Callable
    unravel: Callable
    position: jax.Array


class RunParts(NamedTuple):
    """What :func:`~ebmppl.numpyro.log_evidence` needs of a kernel's last ``init``.

    Attributes:
        logdensity: the log density of one flat point (of the arguments ``init`` got).
        unravel: flat point -> the model's pytree.
        flow_static: the static part of the flow (its parameters are in the state).
    """

    logdensity: Callable
    unravel: Callable
    flow_static: Any


class EnsembleKernel(MCMCKernel):
    """What ebmppl's NumPyro kernels share: all chains advance together, the state's ``z`` is sampled.

    Subclasses call ``__init__`` with their name and set ``_options`` (a frozen
    option object), ``_schedule``, ``_sample_fn`` (the step built by
    ``init``) and ``_run`` (:class:`RunParts`), and say where a state keeps its
    flow (``_flow_of``). A kernel prints its target, flow and options, and shows them as a
    table in a notebook.
    """

    def __init__(self, name: str, model, potential_fn, flow, init_strategy: Callable):
        check_target(name, model, potential_fn)
        self._name = name
        self._model = model
        self._potential_fn = potential_fn
        self._flow = flow
        self._schedule = None  # the schedule of the last run, resolved against its warm-up
        self._init_strategy = init_strategy
        self._postprocess_fn = None
        self._potential_gen = None  # the model's potential of given arguments (a model only)
        self._sample_fn = None
        self._run: RunParts | None = None

    def _walkers(self, rng_key, init_params, model_args, model_kwargs) -> Walkers:
        """The run's walkers, keys and flat log density (see :class:`Walkers`)."""
        num_chains = check_vectorized(self._name, rng_key)
        # the state's key keeps the style the host gave (NumPyro swaps it in on a continued run);
        # flowjax, inside the step, gets typed keys
        key, init_key, flow_key = jax.random.split(rng_key[0], 3)
        init_params, potential_gen, postprocess = initial_params(
            self._name, init_key, num_chains, init_params, self._model, self._init_strategy,
            model_args, model_kwargs,
        )
        if potential_gen is not None:
            self._potential_gen, self._postprocess_fn = potential_gen, postprocess
            self._potential_fn = potential_gen(*model_args, **model_kwargs)
        logdensity, unravel, position = flat_logdensity(self._potential_fn, init_params)
        return Walkers(key, typed_key(init_key), typed_key(flow_key), init_params, logdensity, unravel, position)

    @property
    def model(self):
        return self._model

    @property
    def sample_field(self):
        return "z"

    @property
    def is_ensemble_kernel(self):
        return True

    @property
    def schedule(self) -> WarmupSchedule | None:
        """The warm-up schedule in use (known once ``init`` has seen ``num_warmup``)."""
        return self._schedule

    def postprocess_fn(self, args, kwargs):
        if self._postprocess_fn is None:
            return identity
        return self._postprocess_fn(*args, **kwargs)

    def sample(self, state, model_args, model_kwargs):
        return self._sample_fn(state, model_args, model_kwargs)

    def _logdensity_of(self, logdensity: Callable, unravel: Callable, model_args, model_kwargs) -> Callable:
        """The flat log density for the arguments ``sample`` is given: a model's is rebuilt from them.

        With ``MCMC(..., jit_model_args=True)`` NumPyro compiles ``sample`` once
        and passes each run's arguments as traced values; a log density fixed
        at ``init`` would keep the first run's data. ``logdensity`` (that of
        ``init``) serves a ``potential_fn``, which takes no arguments.
        """
        if self._potential_gen is None:
            return logdensity
        return _flat(self._potential_gen(*model_args, **model_kwargs), unravel)

    def _flow_of(self, state) -> tuple[Any, Any, Any]:
        """``(params, whitening, ready)`` of the flow a state carries."""
        raise NotImplementedError

    def _frozen_proposal(self, state, model_args=(), model_kwargs=None) -> tuple[Any, Any, Callable]:
        """The flow of a run's ``state`` as a proposal, and the log density of the run's model.

        Args:
            state: the kernel's state after warm-up (``mcmc.last_state``).
            model_args, model_kwargs: the model's arguments (those of the run).

        Returns:
            ``(flow, whitening, logdensity)``: the flowjax flow on whitened
            coordinates, the :class:`~ebmppl.numpyro.flows.Whitening` to data
            coordinates, and the flat unconstrained log density of one point
            (Jacobians of constrained sites included).

        Raises:
            ValueError: no run yet, or a flow that was never fitted.
        """
        if self._run is None or state is None:
            raise ValueError(f"{self._name} has no finished run: call mcmc.run(...) first")
        params, whitening, ready = self._flow_of(state)
        if not bool(ready):
            raise ValueError(
                f"{self._name}'s flow was never fitted (no warm-up, or a schedule without fits): "
                "it is no proposal for the evidence"
            )
        flow = eqx.combine(params, self._run.flow_static)
        density = self._logdensity_of(self._run.logdensity, self._run.unravel, model_args, model_kwargs or {})
        return flow, whitening, density

    # --- how it shows in a notebook: its target, flow and options --------------------------
    def _rows(self) -> list[tuple[str, str]]:
        return kernel_rows(self._model, self._potential_fn, self._flow, self._options)

    def __repr__(self) -> str:
        return text(self._name, self._rows())

    def _repr_html_(self) -> str:
        return html_table(self._name, self._rows())


def check_vectorized(name: str, rng_key) -> int:
    """The number of chains of an ensemble kernel's ``init``; refuse a single chain."""
    if rng_key is None or is_prng_key(rng_key):
        raise ValueError(
            f"{name} is an ensemble kernel: run it with "
            "MCMC(kernel, ..., num_chains=C, chain_method='vectorized') and C >= 2 "
            "(it got a single chain, or chain_method 'sequential'/'parallel')"
        )
    return rng_key.shape[0]


def initial_params(name, key, num_chains, init_params, model, init_strategy, model_args, model_kwargs):
    """Initial unconstrained parameters (leading axis: chains) and, for a model, its potential.

    Returns:
        ``(init_params, potential_gen, postprocess_gen)``: the model's potential
        and postprocessing of given model arguments; the last two are ``None``
        without a model.
    """
    if init_params is not None:
        sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(init_params)}
        if sizes != {num_chains}:
            raise ValueError(f"init_params need a leading axis of size num_chains={num_chains} on every leaf")
    if model is None:
        if init_params is None:
            raise ValueError(f"{name} with `potential_fn` needs `init_params` in MCMC.run")
        return init_params, None, None
    try:
        info, potential_gen, postprocess_gen, _ = initialize_model(
            jax.random.split(key, num_chains),
            model,
            init_strategy=init_strategy,
            dynamic_args=True,
            model_args=model_args,
            model_kwargs=model_kwargs,
            validate_grad=False,
        )
    except RuntimeError as err:
        raise ValueError(
            f"{name} could not initialise: the model's log density (energy) is not finite "
            f"at any initial point tried ({err})"
        ) from err
    return (info.z if init_params is None else init_params), potential_gen, postprocess_gen


def flat_logdensity(potential_fn: Callable, init_params) -> tuple[Callable, Callable, jax.Array]:
    """The log density of one flat point, the unravel function, and the flat initial positions ``(C, D)``."""
    _, unravel = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], init_params))
    position = jax.vmap(lambda params: ravel_pytree(params)[0])(init_params)
    position = jnp.asarray(position, jnp.result_type(float))
    return _flat(potential_fn, unravel), unravel, position


def _flat(potential_fn: Callable, unravel: Callable) -> Callable:
    """The log density of one flat point: ``x -> -potential_fn(unravel(x))``, checked to be a scalar."""

    def logdensity(x):
        value = -potential_fn(unravel(x))
        if jnp.shape(value) != ():
            raise ValueError(f"the potential must return a scalar per chain, got shape {jnp.shape(value)}")
        return value

    return logdensity


def warn_at_end_of_warmup(kernel: str, unravel: Callable, dim: int, num_warmup: int) -> Callable:
    """``(i, window) -> None``, to call inside a step: at ``i == num_warmup``, the mixing check.

    The check (:func:`ebmppl.mixing.warn_if_not_mixed`) runs on the host, once,
    on the window of the last warm-up positions, and its warning names NumPyro's
    ``num_warmup`` and the site of the worst coordinate.
    """

    def site_of(k: int) -> str:
        tree = unravel(jnp.zeros(dim).at[k].set(1.0))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if np.any(np.asarray(leaf) != 0):
                return str(getattr(path[0], "key", jax.tree_util.keystr(path))) if path else "x"
        return "?"

    def report(window) -> None:
        warn_if_not_mixed(kernel, np.asarray(window), num_warmup, "num_warmup", site_of)

    def check(i, window) -> None:
        jax.lax.cond(i == num_warmup, lambda w: jax.debug.callback(report, w), lambda w: None, window)

    return check


def build_flow(flow: Any, default: Callable, key, dim: int, schedule: WarmupSchedule):
    """The initial flow, the stacked fresh restarts, and whether it is ready before any fit.

    Args:
        flow: ``None`` (use ``default``), a factory ``(key, dim) -> flow`` or a flow.
        default: the factory used for ``None``.
        key: JAX key.
        dim: the latent dimension.
        schedule: the warm-up schedule (how many fits, how many restarts each).
    """
    factory = default if flow is None else flow
    if isinstance(factory, eqx.Module):
        flow, ready, factory = factory, True, None
    elif callable(factory):
        flow, ready = factory(key, dim), False
    else:
        raise TypeError(f"flow must be None, a factory (key, dim) -> flow, or a flow; got {factory!r}")
    check_flow(flow, dim)
    num_fits = len(schedule.fit_iterations)
    restarts = schedule.fresh_restarts if factory is not None else 0
    params, _ = partition_flow(flow)
    if restarts == 0 or num_fits == 0:
        fresh = jax.tree.map(lambda leaf: jnp.zeros((max(num_fits, 1), 0) + leaf.shape, leaf.dtype), params)
    else:
        keys = jax.random.split(jax.random.fold_in(key, 1), num_fits * restarts)
        bank = [partition_flow(factory(k, dim))[0] for k in keys]
        fresh = jax.tree.map(
            lambda *leaves: jnp.stack(leaves).reshape((num_fits, restarts) + leaves[0].shape), *bank
        )
    return flow, fresh, ready


def check_initial_energy(name: str, logdensity) -> None:
    """Refuse initial points where the energy is NaN or infinite, naming the chains."""
    finite = np.isfinite(np.asarray(logdensity))
    if not finite.any():
        raise ValueError(
            f"{name}: the energy (potential) is NaN or infinite at every initial point; "
            "check the model or potential_fn"
        )
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise ValueError(f"{name}: the energy is NaN or infinite at the initial point of chains {bad}")
