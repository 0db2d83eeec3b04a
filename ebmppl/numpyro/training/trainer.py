"""``EBMTrainer``: maximum-likelihood training of an energy with flow-assisted negatives (NumPyro).

The model declares what is trained: a :class:`~ebmppl.numpyro.Potential` at
an observed site, in a plate over the data, whose energy is a neural network
registered with ``numpyro.contrib.module`` (``eqx_module``, ``flax_module``).
The trainer finds that site, the energy's parameters and the data by tracing
the model, as SVI does.

One update: draw a data batch ``x+``; draw ``batch_size`` negatives ``x-``
with the method's function of :mod:`~ebmppl.numpyro.training.negatives`
(``"flow"``: the pool's chains moved by rounds of an i-SIR move proposed by
the flow and MALA moves; ``"ula"``, ``"short-run"``: MALA only, from the pool
or from noise; ``"neutra"``: MALA in the latent space of a flow fitted to
the data by maximum likelihood in :meth:`EBMTrainer.init` and then frozen
as the model's backbone, ``p(x) ∝ exp(-E(x)) q(x)``); the negatives go back
to the pool; step the energy's parameters along
``mean ∇E(x+) - mean ∇E(x-)`` and, with ``"flow"``, the flow's along
``mean ∇ log λ(x-)`` (forward KL on the negatives).

Building the trainer (tracing the model, the flow's template, compiling the
update) happens once, on the first call that has the model's arguments;
making a state is :meth:`EBMTrainer.init`'s alone, so :meth:`EBMTrainer.load`
never fits anything.

The class's example goes through the whole API.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers

from ebmppl._repr import html_table, kernel_rows, text
from ebmppl.numpyro.flows import check_flow, default_flow, fit_flow, partition_flow
from ebmppl.numpyro.keys import typed_key
from ebmppl.numpyro.potential import Potential
from ebmppl.numpyro.training.checkpoint import load_checkpoint, save_checkpoint
from ebmppl.numpyro.training.negatives import NEGATIVES, Chains, Target
from ebmppl.numpyro.training.state import TrainResult, TrainState
from ebmppl.options import TrainerOptions

__all__ = ["EBMTrainer"]

# the statistics every update reports and run records (mode_weights too, with mode centres)
_HISTORY = ("loss", "energy_data", "energy_negatives", "global_accept_prob", "local_accept_prob")


class _Built(NamedTuple):
    """What building a trainer for the model's arguments gives (nothing of it is a state)."""

    args: tuple
    kwargs: dict
    site: str  # the observed Potential's name
    data: jax.Array  # (n, D)
    params: Any  # the energy's parameters as one trace made them: a template
    flow_params: Any  # the flow template's trainable arrays
    flow_static: Any  # the flow's static part
    update: Callable  # the jitted update, state -> (state, stats)


class EBMTrainer:
    """Joint training of a ``Potential``'s energy and a flow, reading like NumPyro's SVI.

    ``init`` and ``run`` take a JAX key first (either key style); the state
    carries the key of every later update. The Pyro trainer has the same
    API without keys (it draws from Pyro's seeded RNG).

    Args:
        model: a NumPyro model with one observed ``Potential`` site in a plate
            over the data; its ``numpyro.param`` sites are the energy's parameters.
        flow: the proposal: ``None`` for :func:`~ebmppl.numpyro.flows.default_flow`,
            a factory ``(key, dim) -> flow`` or a flowjax flow (exact inverse).
            Its static (non-trainable) parts are not saved in checkpoints:
            :meth:`load` rebuilds them from the factory or the flow.
        optim: an optax optimizer, used for the energy and (a copy) the flow.
        method: ``"flow"``, ``"ula"``, ``"short-run"`` or ``"neutra"`` (see
            :mod:`~ebmppl.numpyro.training.negatives`). With ``"neutra"`` the
            fitted flow takes the place of the Potential's ``base``: the
            trained density is ``exp(-energy(x)) q(x)``, and :meth:`potential`
            returns it as a flow-backbone ``Potential``.
        batch_size: data points and negatives per update.
        pool_size: persistent chains (``"neutra"``: the latest negatives).
        num_rounds: rounds per update, each an i-SIR move (``"flow"`` only)
            and ``num_local_steps`` MALA moves (``"neutra"``: one round).
        num_local_steps: MALA steps per round; ``None`` for 25, or 128 with
            ``"neutra"``.
        num_particles: i-SIR candidates per chain.
        step_size: initial MALA step size, adapted toward ``target_accept_prob``;
            ``None`` for 0.05, or 0.5 (in the latent space) with ``"neutra"``.
        target_accept_prob: MALA acceptance aimed at; ``None`` for 0.65, or
            0.75 with ``"neutra"``.
        energy_penalty: ``c`` of the ``c · mean(E(x+)² + E(x-)²)`` penalty.
        max_grad_norm: gradients are clipped to this global norm.
        max_failures: consecutive non-finite updates tolerated before an
            error (counted in the state, across a resume).
        mode_centres: optional ``(K, D)`` centres; the history then records
            the weights of the negatives' modes (nearest centre).
        ema_decay: if given (e.g. ``0.99``), the result's parameters are the
            exponential moving average ``a <- decay·a + (1-decay)·θ`` of the
            iterates, which damps the swings of a stochastic optimizer; the
            chains always follow the current iterate.
        flow_fit_steps: ``"neutra"`` only: Adam steps (learning rate
            ``flow_learning_rate``, minibatches of ``batch_size``) of the
            maximum-likelihood fit of the flow to the data in :meth:`init`.
        flow_learning_rate: see ``flow_fit_steps``.

    Attributes:
        options: the validated :class:`~ebmppl.options.TrainerOptions` (the
            method's defaults filled in); read it, never write it.

    A trainer prints its model, flow and options (a table in a notebook);
    :class:`~ebmppl.numpyro.training.TrainResult` prints the run's method, steps,
    parameter count and last statistics.

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist, equinox as eqx, optax, tempfile
        >>> from numpyro.contrib.module import eqx_module
        >>> from ebmppl.numpyro import EBMTrainer, Potential
        >>> net = eqx.nn.MLP(2, "scalar", 16, 2, key=jax.random.key(0))
        >>> base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)  # keeps exp(-E) normalizable
        >>> def model(x):
        ...     energy = eqx_module("energy", net)
        ...     with numpyro.plate("data", x.shape[0]):
        ...         numpyro.sample("x", Potential(jax.vmap(energy), event_shape=(2,), base=base), obs=x)
        >>> data = jax.random.normal(jax.random.key(1), (512, 2))
        >>> options = dict(optim=optax.adam(1e-3), batch_size=64, pool_size=256, num_rounds=1, num_local_steps=5,
        ...                num_particles=8, ema_decay=0.9)
        >>> trainer = EBMTrainer(model, **options)
        >>> state = trainer.init(jax.random.key(2), data)
        >>> state, stats = trainer.update(state, data)
        >>> path = tempfile.mkdtemp() + "/state.npz"
        >>> trainer.save(path, state)
        >>> resumed = EBMTrainer(model, **options).load(path, data)  # e.g. in a new process
        >>> result = trainer.run(jax.random.key(3), 5, data, init_state=resumed, progress_bar=False)
        >>> int(result.state.step), result.history["loss"].shape, trainer.options.num_local_steps
        (6, (5,), 5)
        >>> trainer.potential(result.params, data).log_prob(data[:3]).shape  # the trained density
        (3,)
        >>> trainer.flow(result.state).sample(jax.random.key(4), (7,)).shape  # a sampler of it
        (7, 2)
    """

    def __init__(
        self,
        model: Callable,
        *,
        flow: Any = None,
        optim: optax.GradientTransformation,
        method: str = "flow",
        batch_size: int = 256,
        pool_size: int = 8192,
        num_rounds: int = 4,
        num_local_steps: int | None = None,
        num_particles: int = 64,
        step_size: float | None = None,
        target_accept_prob: float | None = None,
        energy_penalty: float = 0.0,
        max_grad_norm: float = 10.0,
        max_failures: int = 10,
        mode_centres=None,
        ema_decay: float | None = None,
        flow_fit_steps: int = 2000,
        flow_learning_rate: float = 3e-3,
    ):
        self.options = TrainerOptions(
            method=method, batch_size=batch_size, pool_size=pool_size, num_rounds=num_rounds,
            num_local_steps=num_local_steps, num_particles=num_particles, step_size=step_size,
            target_accept_prob=target_accept_prob, energy_penalty=energy_penalty, max_grad_norm=max_grad_norm,
            max_failures=max_failures, ema_decay=ema_decay, flow_fit_steps=flow_fit_steps,
            flow_learning_rate=flow_learning_rate,
        ).validate()
        self.model = model
        self.optim = optax.chain(optax.clip_by_global_norm(self.options.max_grad_norm), optim)
        self.mode_centres = None if mode_centres is None else jnp.asarray(mode_centres)
        self._flow_arg = flow
        self._negatives = NEGATIVES[self.options.method]
        self._trains_flow = self.options.method == "flow"  # the others leave the flow as it is
        self._backbone = self.options.method == "neutra"  # the flow is fitted in init, then frozen
        self._built: _Built | None = None
        self._backbone_params = None  # "neutra": the frozen flow of the last state made, loaded or updated

    # --- how it shows in a notebook ---------------------------------------------------------
    def _rows(self) -> list[tuple[str, str]]:
        return kernel_rows(self.model, None, self._flow_arg, self.options, mode_centres=self.mode_centres)

    def __repr__(self) -> str:
        return text("EBMTrainer", self._rows())

    def _repr_html_(self) -> str:
        return html_table("EBMTrainer", self._rows())

    # --- the model and the flow -------------------------------------------------------------
    def _inspect(self, key, args, kwargs) -> tuple[str, Any, jax.Array]:
        """The observed Potential site's name, the energy's initial parameters, the data ``(n, D)``."""
        trace = handlers.trace(handlers.seed(self.model, key)).get_trace(*args, **kwargs)
        sites = [
            site for site in trace.values()
            if site["type"] == "sample" and site["is_observed"] and isinstance(_base_fn(site["fn"]), Potential)
        ]
        if len(sites) != 1:
            raise ValueError(
                f"EBMTrainer needs exactly one observed Potential site in the model, found {len(sites)}"
            )
        params = {name: site["value"] for name, site in trace.items() if site["type"] == "param"}
        if not params:
            raise ValueError("the model registers no parameters (numpyro.param / contrib.module) to train")
        return sites[0]["name"], params, _flat_data(sites[0]["value"], _base_fn(sites[0]["fn"]).event_shape)

    def _site_potential(self, site: str, params, args, kwargs) -> Potential:
        """The site's ``Potential`` (one point's density) with the energy's parameters ``params``."""
        substituted = handlers.substitute(handlers.seed(self.model, 0), data=params)
        return _base_fn(handlers.trace(substituted).get_trace(*args, **kwargs)[site]["fn"])

    def _new_flow(self, key, dim: int):
        """A fresh flow from the factory (or the flow given)."""
        factory = default_flow if self._flow_arg is None else self._flow_arg
        return factory if isinstance(factory, eqx.Module) else factory(key, dim)

    def _build(self, args, kwargs, traced=None, flow=None) -> _Built:
        """Trace the model and compile the update for these arguments, unless done already.

        ``traced`` and ``flow`` are ``init``'s own trace and fresh flow; without
        them the model is traced with a fixed key and the flow template made
        from the factory unchecked and unfitted (for :meth:`load`, :meth:`update`).
        """
        built = self._built
        if built is not None and _same_arguments((built.args, built.kwargs), (args, kwargs)):
            if flow is None or eqx.tree_equal(partition_flow(flow)[1], built.flow_static):
                self._built = built._replace(args=args, kwargs=kwargs)
                return self._built
        site, params, data = self._inspect(jax.random.key(0), args, kwargs) if traced is None else traced
        if flow is None:
            flow = self._new_flow(jax.random.key(0), data.shape[-1])
        flow_params, flow_static = partition_flow(flow)
        update = jax.jit(_update_fn(self, site, data, flow_static, args, kwargs))
        self._built = _Built(args, kwargs, site, data, params, flow_params, flow_static, update)
        return self._built

    # --- states --------------------------------------------------------------------------------
    def init(self, rng_key, *args, **kwargs) -> TrainState:
        """The state before the first update: energy as the model builds it, flow fresh, pool from the flow.

        With ``method="neutra"`` the flow is first fitted to the data (the
        backbone, frozen afterwards): the only place where a fit happens.

        Args:
            rng_key: JAX key (``jax.random.key`` or ``PRNGKey``).
            *args: the model's arguments (the data).
            **kwargs: the model's keyword arguments.
        """
        model_key, flow_key, pool_key, key = jax.random.split(typed_key(rng_key), 4)
        traced = self._inspect(model_key, args, kwargs)
        flow = self._new_flow(flow_key, traced[2].shape[-1])
        check_flow(flow, traced[2].shape[-1])
        built = self._build(args, kwargs, traced, flow)
        flow_params = partition_flow(flow)[0]
        if self._backbone:  # maximum likelihood on the data, then frozen
            fit_key, pool_key = jax.random.split(pool_key)
            flow_params, _ = fit_flow(
                fit_key, jax.tree.map(lambda leaf: leaf[None], flow_params), built.flow_static, built.data,
                num_steps=self.options.flow_fit_steps, batch_size=self.options.batch_size,
                learning_rate=self.options.flow_learning_rate,
            )
            self._backbone_params = flow_params
        return self._fresh_state(traced[1], flow_params, built.flow_static, pool_key, key)

    def _fresh_state(self, params, flow_params, flow_static, pool_key, key) -> TrainState:
        pool, _ = eqx.combine(flow_params, flow_static).sample_and_log_prob(pool_key, (self.options.pool_size,))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            ebm_params=params,
            ema_params=params,
            ebm_opt_state=self.optim.init(params),
            flow_params=flow_params,
            flow_opt_state=self.optim.init(flow_params),
            pool=pool,
            step_size=jnp.asarray(self.options.step_size, jnp.float32),
            failures=jnp.zeros((), jnp.int32),
            rng_key=key,
        )

    def update(self, state: TrainState, *args, **kwargs) -> tuple[TrainState, dict]:
        """One update; returns the new state and its statistics (those of ``run``'s history and ``finite``).

        A non-finite loss or gradient leaves the parameters unchanged, with a
        warning, and counts in ``state.failures``; ``max_failures`` in a row
        raise a ``FloatingPointError``.
        """
        new, stats = self._build(args, kwargs).update(state)
        if self._backbone:
            self._backbone_params = state.flow_params
        if bool(stats["finite"]):
            return new, stats
        failures = state.failures + 1
        warnings.warn(f"EBMTrainer: non-finite loss or gradient at step {int(state.step)}; update skipped")
        if int(failures) >= self.options.max_failures:
            raise FloatingPointError(
                f"EBMTrainer: {int(failures)} updates in a row had a non-finite loss or gradient "
                f"(the last at step {int(state.step)}); the energy is NaN or infinite on the data or "
                "the negatives"
            )
        return state._replace(step=state.step + 1, failures=failures, rng_key=new.rng_key), stats

    def run(
        self,
        rng_key,
        num_steps: int,
        *args,
        progress_bar: bool = True,
        init_state: TrainState | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 100,
        **kwargs,
    ) -> TrainResult:
        """``init`` (unless ``init_state`` is given) then ``num_steps`` updates.

        Args:
            rng_key: JAX key for ``init`` (unused with ``init_state``).
            num_steps: updates to make.
            *args: the model's arguments (the data).
            **kwargs: the model's keyword arguments.
            progress_bar: show loss, energy gap and global acceptance.
            init_state: resume from this state (e.g. :meth:`load`'s).
            checkpoint: a file to which the state is written (:meth:`save`)
                every ``checkpoint_every`` updates and at the end.
            checkpoint_every: updates between checkpoints.

        Returns:
            A :class:`~ebmppl.numpyro.training.TrainResult`.
        """
        state = self.init(rng_key, *args, **kwargs) if init_state is None else init_state
        names = _HISTORY + (("mode_weights",) if self.mode_centres is not None else ())
        records = {name: [] for name in names}
        steps = _progress(num_steps, progress_bar)
        for i in steps:
            state, stats = self.update(state, *args, **kwargs)
            if checkpoint is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == num_steps):
                self.save(checkpoint, state)
            for name in records:
                records[name].append(np.asarray(stats[name]))
            if progress_bar:
                steps.set_postfix(
                    loss=f"{float(stats['loss']):.3f}",
                    gap=f"{float(stats['energy_data'] - stats['energy_negatives']):.3f}",
                    global_acc=f"{float(stats['global_accept_prob']):.2f}",
                )
        history = {name: np.stack(values) if values else np.zeros(0) for name, values in records.items()}
        params = state.ema_params if self.options.ema_decay is not None else state.ebm_params
        return TrainResult(state, params, history, method=self.options.method)

    # --- what the state stands for -----------------------------------------------------------
    def potential(self, params, *args, **kwargs) -> Potential:
        """The model's ``Potential`` (one point's density) with the energy's parameters ``params``.

        With ``method="neutra"`` it is the flow-backbone ``Potential(energy,
        base=flow)``, the flow of the state last made, loaded or updated.

        Args:
            params: e.g. ``result.params`` or ``state.ebm_params``.
            *args: the model's arguments (the data).
            **kwargs: the model's keyword arguments.
        """
        built = self._build(args, kwargs)
        potential = self._site_potential(built.site, params, args, kwargs)
        if not self._backbone:
            return potential
        if self._backbone_params is None:
            raise RuntimeError("method='neutra': the backbone flow comes from init, load or update; call one first")
        backbone = eqx.combine(self._backbone_params, built.flow_static)
        return Potential(potential.energy, event_shape=potential.event_shape, base=backbone)

    def flow(self, state: TrainState):
        """The flow (a flowjax distribution) with ``state``'s parameters: a sampler of the model.
        """
        if self._built is None:
            raise RuntimeError("the trainer has no flow yet: call init, load or update first")
        return eqx.combine(state.flow_params, self._built.flow_static)

    # --- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, state: TrainState) -> None:
        """Write ``state`` to ``path`` atomically (:func:`~ebmppl.numpyro.training.save_checkpoint`).
        """
        save_checkpoint(path, state)

    def load(self, path: str | os.PathLike, *args, **kwargs) -> TrainState:
        """The state in a file written by :meth:`save`; ``args`` are the model's (the data).

        Builds the trainer if needed (trace, flow template, compiled update)
        and checks the file against it; nothing is fitted or drawn, so a
        ``"neutra"`` backbone is read, not refitted. Resume with
        ``run(key, n, *args, init_state=state)`` or :meth:`update`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: a truncated or foreign file, or a state of another
                model, flow or optimizer.
        """
        built = self._build(args, kwargs)
        like = jax.eval_shape(
            lambda params, flow_params, key: self._fresh_state(params, flow_params, built.flow_static, key, key),
            built.params, built.flow_params, jax.random.key(0),
        )
        state = load_checkpoint(path, like)
        if self._backbone:
            self._backbone_params = state.flow_params
        return state


def _update_fn(trainer: EBMTrainer, site: str, data: jax.Array, flow_static, args, kwargs) -> Callable:
    """The pure update of a trainer built for these arguments: ``state -> (state, stats)``, for ``jax.jit``."""
    options, optim = trainer.options, trainer.optim

    def energy(params, x):
        return trainer._site_potential(site, params, args, kwargs).energy(x)

    def loss_fn(params, batch, negatives):
        e_data, e_neg = energy(params, batch), energy(params, negatives)
        gap = e_data.mean() - e_neg.mean()
        penalty = options.energy_penalty * (jnp.mean(e_data**2) + jnp.mean(e_neg**2))
        return gap + penalty, (e_data.mean(), e_neg.mean())

    def flow_loss(flow_params, negatives):
        return -jnp.mean(eqx.combine(flow_params, flow_static).log_prob(negatives))

    def update(state: TrainState):
        key, data_key, index_key, chain_key, noise_key = jax.random.split(state.rng_key, 5)
        batch = data[jax.random.randint(data_key, (options.batch_size,), 0, data.shape[0])]
        index = jax.random.choice(index_key, options.pool_size, (options.batch_size,), replace=False)
        potential = trainer._site_potential(site, state.ebm_params, args, kwargs)
        target = Target(potential.log_prob, potential.energy, eqx.combine(state.flow_params, flow_static))
        drawn = trainer._negatives(chain_key, Chains(state.pool[index], noise_key, state.step_size), target, options)
        negatives = jax.lax.stop_gradient(drawn.position)
        (loss, (e_data, e_neg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.ebm_params, batch, negatives)
        updates, ebm_opt_state = optim.update(grads, state.ebm_opt_state, state.ebm_params)
        ebm_params = optax.apply_updates(state.ebm_params, updates)
        ema_params = _averaged(state.ema_params, ebm_params, options)
        flow_grads, flow_opt_state, flow_params = {}, state.flow_opt_state, state.flow_params
        if trainer._trains_flow:
            flow_grads = jax.grad(flow_loss)(state.flow_params, negatives)
            flow_updates, flow_opt_state = optim.update(flow_grads, state.flow_opt_state, state.flow_params)
            flow_params = optax.apply_updates(state.flow_params, flow_updates)
        finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(flow_grads)
        finite = finite & jnp.all(jnp.isfinite(negatives))
        new = TrainState(
            step=state.step + 1, ebm_params=ebm_params, ema_params=ema_params, ebm_opt_state=ebm_opt_state,
            flow_params=flow_params, flow_opt_state=flow_opt_state, pool=state.pool.at[index].set(negatives),
            step_size=drawn.step_size, failures=jnp.zeros((), jnp.int32), rng_key=key,
        )
        stats = {
            "loss": loss, "energy_data": e_data, "energy_negatives": e_neg,
            "global_accept_prob": drawn.global_accept_prob, "local_accept_prob": drawn.local_accept_prob,
            "finite": finite,
        }
        if trainer.mode_centres is not None:
            stats["mode_weights"] = _mode_weights(negatives, trainer.mode_centres)
        return new, stats

    return update


def _averaged(average, params, options: TrainerOptions):
    """The moving average after an update (the iterate itself without ``ema_decay``)."""
    decay = options.ema_decay
    if decay is None:
        return params
    return jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p, average, params)


def _mode_weights(negatives: jax.Array, centres: jax.Array) -> jax.Array:
    """Fractions of the negatives nearest each centre."""
    nearest = jnp.argmin(jnp.sum((negatives[:, None] - centres) ** 2, -1), -1)
    return jnp.bincount(nearest, length=len(centres)) / len(nearest)


def _progress(num_steps: int, progress_bar: bool):
    if not progress_bar:
        return range(num_steps)
    from tqdm.auto import tqdm

    return tqdm(range(num_steps), desc="EBMTrainer")


def _base_fn(fn):
    """Unwrap the plate's expansion (and masks) around a site's distribution."""
    while not isinstance(fn, Potential) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _flat_data(value, event_shape) -> jax.Array:
    """The observed values as ``(n, D)`` points, refused with NaN or infinite rows."""
    if len(event_shape) != 1:
        raise ValueError(f"EBMTrainer trains on flat points (event_shape (D,)), got {event_shape}")
    data = jnp.asarray(value).reshape((-1,) + tuple(event_shape))
    bad = np.flatnonzero(~np.isfinite(np.asarray(data)).all(-1))
    if bad.size:
        raise ValueError(f"the data have {bad.size} rows with NaN or infinite values (rows {bad[:5].tolist()})")
    return data


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _same_arguments(old, new) -> bool:
    """Whether the model's arguments are the ones a trainer was built for: the same objects or equal values."""
    old_leaves, old_def = jax.tree.flatten(old)
    new_leaves, new_def = jax.tree.flatten(new)
    if old_def != new_def:
        return False
    return all(a is b or _equal(a, b) for a, b in zip(old_leaves, new_leaves))


def _equal(a, b) -> bool:
    if hasattr(a, "shape") and hasattr(b, "shape"):
        return np.shape(a) == np.shape(b) and bool(np.array_equal(np.asarray(a), np.asarray(b)))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable objects are different arguments
        return False
