"""``EBMTrainer``: maximum-likelihood training of an energy with flow-assisted negatives (NumPyro).

The model declares what is trained: a :class:`~ebmppl.numpyro.Potential` at
an observed site, in a plate over the data, whose energy is a neural network
registered with ``numpyro.contrib.module`` (``eqx_module``, ``flax_module``).
The trainer finds that site, the energy's parameters and the data by tracing
the model, as SVI does.

One update (``method="flow"``, Grenioux et al. 2023): draw a data batch
``x+``; advance ``batch_size`` chains of a persistent pool with ``num_rounds``
rounds of one i-SIR move proposed by the flow and ``num_local_steps`` MALA
moves; the final states are the negatives ``x-`` and go back to the pool;
step the energy's parameters along ``mean ∇E(x+) - mean ∇E(x-)`` and the
flow's along ``mean ∇ log λ(x-)`` (forward KL on the negatives). The
paper's baselines use the same local kernel without the flow:
``method="ula"`` keeps persistent chains moved by MALA alone, and
``"short-run"`` starts the chains from standard normal noise at every
update. ``method="neutra"`` is the NT-EBM of Nijkamp et al. (2020): the
flow is first fitted to the data by maximum likelihood and then frozen as
the model's backbone, ``p(x) ∝ exp(-E(x)) q(x)``; the negatives come from
``num_local_steps`` (128) MALA steps in the flow's latent space, where the
log density is ``log ρ(z) - E(g(z))``, started at flow draws.

Example:
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, equinox as eqx, optax
    >>> from numpyro.contrib.module import eqx_module
    >>> from ebmppl.numpyro import EBMTrainer, Potential
    >>> net = eqx.nn.MLP(2, "scalar", 16, 2, key=jax.random.key(0))
    >>> base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)  # keeps exp(-E) normalizable
    >>> def model(x):
    ...     energy = eqx_module("energy", net)
    ...     with numpyro.plate("data", x.shape[0]):
    ...         numpyro.sample("x", Potential(jax.vmap(energy), event_shape=(2,), base=base), obs=x)
    >>> data = jax.random.normal(jax.random.key(1), (512, 2))
    >>> trainer = EBMTrainer(model, optim=optax.adam(1e-3), batch_size=64, pool_size=256)
    >>> result = trainer.run(jax.random.key(2), 20, data, progress_bar=False)
    >>> result.history["loss"].shape
    (20,)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers

from ebmppl.options import TrainerOptions
from ebmppl.numpyro.flows import check_flow, default_flow, fit_flow, identity_whitening, partition_flow
from ebmppl.numpyro.flows import proposal_log_prob, proposal_sample_and_log_prob
from ebmppl.numpyro.moves.isir import isir_step
from ebmppl.numpyro.moves.hmc import LocalState, hmc_step
from ebmppl.numpyro.keys import typed_key
from ebmppl.numpyro.potential import Potential

__all__ = ["EBMTrainer", "TrainResult", "TrainState", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "ebmppl-numpyro-train-state-v1"

HISTORY = ("loss", "energy_data", "energy_negatives", "global_accept_prob", "local_accept_prob")


class TrainState(NamedTuple):
    """Everything an update needs; a checkpoint is this state.

    Attributes:
        step: updates done.
        ebm_params: the energy's parameters (the model's ``numpyro.param`` sites).
        ema_params: their exponential moving average (``ema_decay``; a copy
            of ``ebm_params`` without it).
        ebm_opt_state: the optimizer's state for them.
        flow_params: the flow's trainable arrays.
        flow_opt_state: the optimizer's state for them.
        pool: shape ``(pool_size, D)``, the persistent chains.
        step_size: the MALA (or Langevin) step size.
        rng_key: JAX key.
    """

    step: jax.Array
    ebm_params: Any
    ema_params: Any
    ebm_opt_state: Any
    flow_params: Any
    flow_opt_state: Any
    pool: jax.Array
    step_size: jax.Array
    rng_key: jax.Array


class TrainResult(NamedTuple):
    """What :meth:`EBMTrainer.run` returns.

    Attributes:
        state: the final :class:`TrainState`.
        params: the trained energy's parameters: their moving average when
            the trainer has ``ema_decay``, else the last iterate.
        history: per-update ``loss``, ``energy_data``, ``energy_negatives``,
            ``global_accept_prob``, ``local_accept_prob`` (and
            ``mode_weights``, shape ``(num_steps, K)``, when mode centres were
            given), each a numpy array.
    """

    state: TrainState
    params: Any
    history: dict


class EBMTrainer:
    """Joint training of a ``Potential``'s energy and a flow, reading like NumPyro's SVI.

    Args:
        model: a NumPyro model with one observed ``Potential`` site in a plate
            over the data; its ``numpyro.param`` sites are the energy's parameters.
        flow: the proposal: ``None`` for :func:`~ebmppl.numpyro.flows.default_flow`,
            a factory ``(key, dim) -> flow`` or a flowjax flow (exact inverse).
        optim: an optax optimizer, used for the energy and (a copy) the flow.
        method: ``"flow"``, ``"ula"``, ``"short-run"`` or ``"neutra"``. With
            ``"neutra"`` the fitted flow takes the place of the Potential's
            ``base``: the trained density is ``exp(-energy(x)) q(x)``, and
            :meth:`potential` returns it as a flow-backbone ``Potential``.
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
        max_failures: consecutive non-finite updates tolerated before an error.
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
        options = TrainerOptions(
            method=method, batch_size=batch_size, pool_size=pool_size, num_rounds=num_rounds,
            num_local_steps=num_local_steps, num_particles=num_particles, step_size=step_size,
            target_accept_prob=target_accept_prob, energy_penalty=energy_penalty, max_grad_norm=max_grad_norm,
            max_failures=max_failures, ema_decay=ema_decay, flow_fit_steps=flow_fit_steps,
            flow_learning_rate=flow_learning_rate,
        ).validate()
        num_local_steps, target_accept_prob, step_size = (
            options.num_local_steps, options.target_accept_prob, options.step_size
        )
        self.model = model
        self.method = method
        self.optim = optax.chain(optax.clip_by_global_norm(max_grad_norm), optim)
        self._flow = flow
        self.batch_size, self.pool_size = batch_size, pool_size
        self.num_rounds, self.num_local_steps = num_rounds, num_local_steps
        self.num_particles, self.step_size = num_particles, float(step_size)
        self.target_accept_prob = float(target_accept_prob)
        self.energy_penalty = float(energy_penalty)
        self.max_failures = max_failures
        self.mode_centres = None if mode_centres is None else jnp.asarray(mode_centres)
        self.ema_decay = ema_decay
        self.flow_fit_steps, self.flow_learning_rate = int(flow_fit_steps), float(flow_learning_rate)
        self._update = None
        self._site = None
        self._backbone_params = None

    # --- model inspection ---------------------------------------------------------
    def _inspect(self, key, args, kwargs):
        """The observed Potential site, the energy's initial parameters, the data."""
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
        data = jnp.asarray(sites[0]["value"])
        event_shape = _base_fn(sites[0]["fn"]).event_shape
        data = data.reshape((-1,) + tuple(event_shape))
        if len(event_shape) != 1:
            raise ValueError(f"EBMTrainer trains on flat points (event_shape (D,)), got {event_shape}")
        bad = np.flatnonzero(~np.isfinite(np.asarray(data)).all(-1))
        if bad.size:
            raise ValueError(f"the data have {bad.size} rows with NaN or infinite values (rows {bad[:5].tolist()})")
        return sites[0]["name"], params, data

    def _potential(self, name, params, args, kwargs, flow_params=None) -> Potential:
        substituted = handlers.substitute(handlers.seed(self.model, 0), data=params)
        potential = _base_fn(handlers.trace(substituted).get_trace(*args, **kwargs)[name]["fn"])
        if self.method != "neutra":
            return potential
        flow_params = self._backbone_params if flow_params is None else flow_params
        flow = eqx.combine(flow_params, self._flow_static)
        return Potential(potential.energy, event_shape=potential.event_shape, base=flow)

    def potential(self, params, *args, **kwargs) -> Potential:
        """The model's ``Potential`` (one point's density) with the energy's parameters ``params``.

        With ``method="neutra"`` it is the flow-backbone ``Potential(energy,
        base=flow)``, the flow as fitted to the data.

        Args:
            params: e.g. ``result.params`` or ``state.ebm_params``.
            *args, **kwargs: the model's arguments (the data).
        """
        if self._site is None:
            raise RuntimeError("call init (or run) first")
        return self._potential(self._site, params, args, kwargs)

    def flow(self, state: TrainState):
        """The flow (a flowjax distribution) with ``state``'s parameters: a sampler of the model."""
        if self._site is None:
            raise RuntimeError("call init (or run) first")
        return eqx.combine(state.flow_params, self._flow_static)

    # --- init / update / run --------------------------------------------------------
    def init(self, rng_key, *args, **kwargs) -> TrainState:
        """The state before the first update: energy as built, flow fresh, pool from the flow."""
        model_key, flow_key, pool_key, key = jax.random.split(typed_key(rng_key), 4)
        name, params, data = self._inspect(model_key, args, kwargs)
        dim = data.shape[-1]
        factory = default_flow if self._flow is None else self._flow
        flow = factory if isinstance(factory, eqx.Module) else factory(flow_key, dim)
        check_flow(flow, dim)
        flow_params, flow_static = partition_flow(flow)
        if self.method == "neutra":  # the backbone: maximum likelihood on the data, then frozen
            fit_key, pool_key = jax.random.split(pool_key)
            flow_params, _ = fit_flow(
                fit_key, jax.tree.map(lambda leaf: leaf[None], flow_params), flow_static, data,
                num_steps=self.flow_fit_steps, batch_size=self.batch_size, learning_rate=self.flow_learning_rate,
            )
            flow = eqx.combine(flow_params, flow_static)
            self._backbone_params = flow_params
        pool, _ = flow.sample_and_log_prob(pool_key, (self.pool_size,))
        self._build(name, data, flow_static, args, kwargs)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            ebm_params=params,
            ema_params=params,
            ebm_opt_state=self.optim.init(params),
            flow_params=flow_params,
            flow_opt_state=self.optim.init(flow_params),
            pool=pool,
            step_size=jnp.asarray(self.step_size, jnp.float32),
            rng_key=key,
        )

    def update(self, state: TrainState, *args, **kwargs) -> tuple[TrainState, dict]:
        """One update; returns the new state and its statistics.

        A non-finite loss or gradient leaves the parameters unchanged, with a
        warning; ``max_failures`` in a row raise a ``FloatingPointError``.
        """
        if self._update is None:
            raise RuntimeError("call init (or run) before update")
        new, stats = self._update(state)
        self._backbone_params = state.flow_params  # "neutra": the frozen flow of the state (resumed or not)
        if not bool(stats["finite"]):
            self._failures += 1
            warnings.warn(f"EBMTrainer: non-finite loss or gradient at step {int(state.step)}; update skipped")
            if self._failures >= self.max_failures:
                raise FloatingPointError(
                    f"EBMTrainer: {self._failures} updates in a row had a non-finite loss or gradient "
                    f"(the last at step {int(state.step)}); the energy is NaN or infinite on the data or "
                    "the negatives"
                )
            return state._replace(step=state.step + 1, rng_key=new.rng_key), stats
        self._failures = 0
        return new, stats

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
    ):
        """``init`` (unless ``init_state`` is given) then ``num_steps`` updates.

        Args:
            rng_key: JAX key for ``init``.
            num_steps: updates to make.
            *args, **kwargs: the model's arguments (the data).
            progress_bar: show loss, energy gap and global acceptance.
            init_state: resume from this state (e.g. :func:`load_checkpoint`'s).
            checkpoint: a file to which the state is written, atomically,
                every ``checkpoint_every`` updates and at the end.
            checkpoint_every: updates between checkpoints.

        Returns:
            A :class:`TrainResult`.
        """
        state = self.init(rng_key, *args, **kwargs) if init_state is None else init_state
        if init_state is not None and self._update is None:
            self.init(rng_key, *args, **kwargs)
        records = {name: [] for name in HISTORY + (("mode_weights",) if self.mode_centres is not None else ())}
        steps = range(num_steps)
        if progress_bar:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="EBMTrainer")
        for i in steps:
            state, stats = self.update(state, *args, **kwargs)
            if checkpoint is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == num_steps):
                save_checkpoint(checkpoint, state)
            for name in records:
                records[name].append(np.asarray(stats[name]))
            if progress_bar:
                steps.set_postfix(
                    loss=f"{float(stats['loss']):.3f}",
                    gap=f"{float(stats['energy_data'] - stats['energy_negatives']):.3f}",
                    global_acc=f"{float(stats['global_accept_prob']):.2f}",
                )
        history = {name: np.stack(values) if values else np.zeros(0) for name, values in records.items()}
        return TrainResult(state, state.ema_params if self.ema_decay is not None else state.ebm_params, history)

    # --- the jitted update ------------------------------------------------------------
    def _build(self, name, data, flow_static, args, kwargs):
        self._failures = 0
        self._site, self._flow_static = name, flow_static
        trainer = self

        def energy_fn(params, x):
            return trainer._potential(name, params, args, kwargs).energy(x)

        def log_density(params, x):
            return trainer._potential(name, params, args, kwargs).log_prob(x)

        def energy_one(params, x):
            return energy_fn(params, x[None])[0]

        def update(state: TrainState):
            key, data_key, index_key, chain_key, noise_key = jax.random.split(state.rng_key, 5)
            batch = data[jax.random.randint(data_key, (trainer.batch_size,), 0, data.shape[0])]
            index = jax.random.choice(index_key, trainer.pool_size, (trainer.batch_size,), replace=False)
            start = state.pool[index]
            if trainer.method == "short-run":
                start = jax.random.normal(noise_key, start.shape, start.dtype)
            if trainer.method == "neutra":
                negatives, step_size, local_acc = trainer._advance_latent(
                    chain_key, state, lambda x: energy_one(state.ebm_params, x), flow_static
                )
                global_acc = jnp.zeros(())
            else:
                negatives, step_size, global_acc, local_acc = trainer._advance(
                    chain_key, state, start, lambda x: log_density(state.ebm_params, x), flow_static
                )
            negatives = jax.lax.stop_gradient(negatives)

            def loss_fn(params):
                e_data, e_neg = energy_fn(params, batch), energy_fn(params, negatives)
                gap = e_data.mean() - e_neg.mean()
                penalty = trainer.energy_penalty * (jnp.mean(e_data**2) + jnp.mean(e_neg**2))
                return gap + penalty, (e_data.mean(), e_neg.mean())

            (loss, (e_data, e_neg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.ebm_params)
            updates, ebm_opt_state = trainer.optim.update(grads, state.ebm_opt_state, state.ebm_params)
            ebm_params = optax.apply_updates(state.ebm_params, updates)
            if trainer.ema_decay is None:
                ema_params = ebm_params
            else:
                ema_params = jax.tree.map(
                    lambda a, p: trainer.ema_decay * a + (1.0 - trainer.ema_decay) * p, state.ema_params, ebm_params
                )

            def flow_loss(flow_params):
                return -jnp.mean(eqx.combine(flow_params, flow_static).log_prob(negatives))

            if trainer.method == "flow":
                flow_grads = jax.grad(flow_loss)(state.flow_params)
                flow_updates, flow_opt_state = trainer.optim.update(
                    flow_grads, state.flow_opt_state, state.flow_params
                )
                flow_params = optax.apply_updates(state.flow_params, flow_updates)
            else:  # the baselines do not use the flow
                flow_grads, flow_opt_state, flow_params = {}, state.flow_opt_state, state.flow_params

            finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(flow_grads)
            finite = finite & jnp.all(jnp.isfinite(negatives))
            new = TrainState(
                step=state.step + 1,
                ebm_params=ebm_params,
                ema_params=ema_params,
                ebm_opt_state=ebm_opt_state,
                flow_params=flow_params,
                flow_opt_state=flow_opt_state,
                pool=state.pool.at[index].set(negatives),
                step_size=step_size,
                rng_key=key,
            )
            stats = {
                "loss": loss, "energy_data": e_data, "energy_negatives": e_neg,
                "global_accept_prob": global_acc, "local_accept_prob": local_acc, "finite": finite,
            }
            if trainer.mode_centres is not None:
                nearest = jnp.argmin(jnp.sum((negatives[:, None] - trainer.mode_centres) ** 2, -1), -1)
                stats["mode_weights"] = jnp.bincount(nearest, length=len(trainer.mode_centres)) / len(nearest)
            return new, stats

        self._update = jax.jit(update)

    def _advance_latent(self, key, state: TrainState, energy, flow_static):
        """NT-EBM negatives: MALA on ``log ρ(z) - E(g(z))`` from base draws, mapped by the flow ``g``."""
        flow = eqx.combine(state.flow_params, flow_static)

        def latent(z):
            return flow.base_dist.log_prob(z) - energy(flow.bijection.transform(z))

        value_and_grad = jax.vmap(jax.value_and_grad(latent))
        start_key, key = jax.random.split(key)
        z = jax.random.normal(start_key, (self.batch_size,) + flow.shape)
        step_size = jnp.zeros(self.batch_size) + state.step_size

        def local(w, local_step_key):
            w, info = hmc_step(local_step_key, w, value_and_grad, step_size, 1)
            return w, info.accept_prob.mean()

        walkers, accepts = jax.lax.scan(
            local, LocalState(z, *value_and_grad(z)), jax.random.split(key, self.num_local_steps)
        )
        # Robbins-Monro on log(step size) toward the target acceptance
        new_step_size = state.step_size * jnp.exp(0.1 * (accepts.mean() - self.target_accept_prob))
        return jax.vmap(flow.bijection.transform)(walkers.position), new_step_size, accepts.mean()

    def _advance(self, key, state: TrainState, start, logdensity, flow_static):
        """Move the chains: rounds of an i-SIR move ("flow" only) and MALA moves."""
        value_and_grad = jax.vmap(jax.value_and_grad(lambda x: logdensity(x[None])[0]))
        zeros = jnp.zeros(start.shape[0])
        flow = eqx.combine(state.flow_params, flow_static)
        whitening = identity_whitening(start.shape[-1])

        def one_round(carry, round_key):
            walkers, step_size = carry
            global_key, local_key = jax.random.split(round_key)
            global_acc = jnp.zeros(())
            if self.method == "flow":
                position, info = isir_step(
                    global_key, walkers.position, walkers.logdensity, logdensity,
                    lambda k, shape: proposal_sample_and_log_prob(flow, whitening, k, shape),
                    lambda x: proposal_log_prob(flow, whitening, x), self.num_particles,
                )
                walkers = LocalState(position, *value_and_grad(position))
                global_acc = info.accept_prob.mean()

            def local(w, local_step_key):
                w, local_info = hmc_step(local_step_key, w, value_and_grad, zeros + step_size, 1)
                return w, local_info.accept_prob.mean()

            walkers, accepts = jax.lax.scan(local, walkers, jax.random.split(local_key, self.num_local_steps))
            # Robbins-Monro on log(step size) toward the target acceptance
            step_size = step_size * jnp.exp(0.1 * (accepts.mean() - self.target_accept_prob))
            return (walkers, step_size), (global_acc, accepts.mean())

        walkers = LocalState(start, *value_and_grad(start))
        (walkers, step_size), (global_acc, local_acc) = jax.lax.scan(
            one_round, (walkers, state.step_size), jax.random.split(key, self.num_rounds)
        )
        return walkers.position, step_size, global_acc.mean(), local_acc.mean()


def _base_fn(fn):
    """Unwrap the plate's expansion (and masks) around a site's distribution."""
    while not isinstance(fn, Potential) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def save_checkpoint(path: str | os.PathLike, state: TrainState) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file, then a rename).

    Every leaf is saved exactly (keys as their raw data), so a run resumed
    from the file continues bitwise as the uninterrupted run would.

    Example:
        >>> import jax, tempfile, pathlib
        >>> from ebmppl.numpyro import load_checkpoint, save_checkpoint
        >>> state = {"step": jax.numpy.arange(3), "key": jax.random.key(0)}  # any pytree
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.npz"
        >>> save_checkpoint(path, state)
        >>> load_checkpoint(path, like=state)["step"]
        Array([0, 1, 2], dtype=int32)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves, treedef = jax.tree.flatten(state)
    arrays, is_key = {}, []
    for i, leaf in enumerate(leaves):
        key_leaf = jnp.issubdtype(jnp.asarray(leaf).dtype, jax.dtypes.prng_key)
        is_key.append(key_leaf)
        arrays[f"leaf_{i}"] = np.asarray(jax.random.key_data(leaf) if key_leaf else leaf)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.savez(handle, __format__=np.asarray(CHECKPOINT_FORMAT), __treedef__=np.asarray(str(treedef)),
                 __is_key__=np.asarray(is_key, bool), **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, like: TrainState) -> TrainState:
    """Read a state written by :func:`save_checkpoint`, checked against ``like``.

    ``like`` is a state of the same trainer (e.g. ``trainer.init(...)``'s):
    the checkpoint must have its structure, shapes and dtypes.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated or foreign file, or a state of another
            structure (another model, flow or optimizer).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {name: archive[name] for name in archive.files}
    except Exception as err:  # zipfile.BadZipFile, EOFError, ValueError, OSError...
        raise ValueError(f"checkpoint {str(path)!r} is truncated or not an ebmppl checkpoint ({err})") from err
    if str(contents.get("__format__", "")) != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not an ebmppl NumPyro training checkpoint")
    leaves, treedef = jax.tree.flatten(like)
    if str(contents["__treedef__"]) != str(treedef):
        raise ValueError(
            f"checkpoint {str(path)!r} holds a state of another structure than this trainer's "
            "(another model, flow or optimizer)"
        )
    restored = []
    for i, (leaf, is_key) in enumerate(zip(leaves, contents["__is_key__"])):
        value = contents[f"leaf_{i}"]
        if is_key:
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf))
        elif value.shape != jnp.shape(leaf) or value.dtype != jnp.asarray(leaf).dtype:
            raise ValueError(
                f"checkpoint {str(path)!r}: leaf {i} has shape {value.shape} and dtype {value.dtype}, "
                f"this trainer's state has {jnp.shape(leaf)} and {jnp.asarray(leaf).dtype}"
            )
        restored.append(jnp.asarray(value) if not is_key else value)
    return jax.tree.unflatten(treedef, restored)
