"""The NumPyro part of the command line: train a run, load it as a ``Potential``, sample it.

``ebmppl train --backend numpyro`` calls :func:`train`; :func:`load_potential`
turns its folder into a normalised :class:`TrainedPotential` for use in
another model, and :func:`sample_run` draws from it with ``FlowMCMC``.
:mod:`ebmppl.app.pyro_run` is the same for Pyro.

Example:
    >>> import tempfile, jax, jax.numpy as jnp
    >>> from ebmppl.app.cli import main
    >>> from ebmppl.numpyro import load_potential
    >>> run = tempfile.mkdtemp() + "/run"
    >>> main(["train", "--backend", "numpyro", "--steps", "5", "--out", run, "--quiet"])  # doctest: +ELLIPSIS
    ebmppl: trained flow (numpyro) on line_of_four ...
    0
    >>> potential = load_potential(run)  # normalised: use it at a latent site, e.g. as a prior
    >>> potential.log_prob(jnp.zeros((3, 2))).shape, potential.flow.sample(jax.random.key(0), (4,)).shape
    ((3,), (4, 2))
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.contrib.module import eqx_module

from ebmppl.app.config import BASE_SCALE, RunError, read_trained_run
from ebmppl.app.data import RunData, load_run_data
from ebmppl.app.loop import load_history, save_history, training_loop
from ebmppl.app.report import RunResult, SampleResult, mode_weights_by_importance
from ebmppl.numpyro.flows import join_flow_leaves, split_flow_leaves
from ebmppl.numpyro.partition import log_partition
from ebmppl.numpyro.potential import Potential
from ebmppl.numpyro.training import EBMTrainer

if TYPE_CHECKING:  # pragma: no cover
    from ebmppl.numpyro.training import TrainState

__all__ = ["CHECKPOINT", "TrainedPotential", "load_potential", "sample_run", "train"]

#: The trainer's checkpoint in the run folder.
CHECKPOINT = "checkpoint.npz"
_HISTORY = "history.npz"  # the statistics per step, saved beside the checkpoint


class TrainedPotential(Potential):
    """A trained run's model: a :class:`~ebmppl.numpyro.Potential` that carries the run's trained flow.

    The flow is part of the potential's pytree: its arrays are data, the
    rest of it (functions, sizes) auxiliary, so ``flow`` survives
    ``jax.tree.map``, ``jax.jit`` and ``vmap`` of a function taking the
    potential, and follows what they do to its arrays.

    Args:
        energy: as for ``Potential``.
        event_shape: as for ``Potential``.
        flow: the trained flow (a flowjax distribution of shape
            ``event_shape``), a fast approximate sampler and a proposal for
            :class:`~ebmppl.numpyro.FlowMCMC`.
        base: as for ``Potential``.
        support: as for ``Potential``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flowjax.distributions import Normal
        >>> potential = TrainedPotential(lambda x: jnp.sum(x**2, -1), event_shape=(2,), flow=Normal(jnp.zeros(2)))
        >>> copy = jax.tree.map(lambda leaf: leaf, potential)
        >>> type(copy).__name__, copy.flow.sample(jax.random.key(0), (4,)).shape
        ('TrainedPotential', (4, 2))
        >>> jax.jit(lambda p, x: p.flow.log_prob(x))(potential, jnp.zeros(2))
        Array(-1.837877, dtype=float32)
    """

    pytree_data_fields = ("_flow_arrays",)
    pytree_aux_fields = ("_flow_rest",)

    def __init__(self, energy: Callable, *, event_shape: tuple[int, ...], flow, base=None, support=None,
                 validate_args: bool | None = None):
        self._flow_arrays, self._flow_rest = split_flow_leaves(flow)
        super().__init__(energy, event_shape=event_shape, base=base, support=support, validate_args=validate_args)

    @property
    def flow(self):
        """The trained flow, rebuilt from the potential's pytree fields."""
        return join_flow_leaves(self._flow_arrays, self._flow_rest)


def _network(config: dict, dim: int) -> eqx.nn.MLP:
    """The energy network, its last layer scaled so that ``E ≈ 0`` at the start."""
    net = eqx.nn.MLP(dim, "scalar", config["width"], config["depth"], activation=jax.nn.silu,
                     key=jax.random.key(config["seed"]))
    return eqx.tree_at(lambda m: m.layers[-1].weight, net, net.layers[-1].weight * 0.01)


def _trainer(config: dict, data: RunData, net: eqx.nn.MLP) -> EBMTrainer:
    """The run's model (``net`` tilting ``N(0, 3²)`` in standardised coordinates) and its trainer."""
    dim = data.train.shape[1]
    base = dist.Normal(0.0, BASE_SCALE).expand([dim]).to_event(1)

    def model(x):
        energy = eqx_module("energy", net)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", Potential(jax.vmap(energy), event_shape=(dim,), base=base), obs=x)

    schedule = optax.cosine_decay_schedule(config["learning_rate"], config["steps"], alpha=config["lr_floor"])
    centres = None if data.target is None else (data.target.centres - data.loc) / data.scale
    return EBMTrainer(
        model, optim=optax.adam(schedule), method=config["method"], batch_size=config["batch_size"],
        pool_size=config["pool_size"], num_rounds=config["num_rounds"], num_local_steps=None if config["method"] == "neutra" else config["num_local_steps"],
        num_particles=config["num_particles"], ema_decay=config["ema_decay"], mode_centres=centres,
    )


def _standardised(data: RunData, x) -> jax.Array:
    return jnp.asarray((np.asarray(x) - data.loc) / data.scale, jnp.float32)


def train(run_dir: Path, config: dict, data: RunData, resume: bool, progress: bool = True) -> RunResult:
    """Train (or resume) the run in ``run_dir``.

    Args:
        run_dir: the run folder (``config.json`` and the data are written).
        config: the run's configuration.
        data: the run's data.
        resume: continue from the checkpoint in ``run_dir``, if any.
        progress: show a progress bar.

    Returns:
        What the report needs: the history, the chains, the normalised
        model's log density, ``log Z`` and the mode weights.

    Raises:
        RunError: the checkpoint to resume from cannot be read.
        Interrupted: Ctrl-C; the checkpoint is saved.
    """
    trainer = _trainer(config, data, _network(config, data.train.shape[1]))
    z_train = _standardised(data, data.train)
    if resume and (run_dir / CHECKPOINT).exists():  # none yet: interrupted before the first step
        state, history = _restore(run_dir, trainer, z_train)
    else:
        state, history = trainer.init(jax.random.key(config["seed"]), z_train), {}

    def step() -> dict:
        nonlocal state
        state, stats = trainer.update(state, z_train)
        for name, value in stats.items():
            if name != "finite":
                history.setdefault(name, []).append(np.asarray(value))
        return {name: float(stats[name]) for name in ("loss", "energy_data", "energy_negatives", "global_accept_prob")}

    def save(_steps_done: int) -> None:
        save_history(run_dir / _HISTORY, history)  # before the checkpoint: at least as long
        trainer.save(run_dir / CHECKPOINT, state)

    training_loop(step, save, int(state.step), config["steps"], config["checkpoint_every"], progress)
    return _result(config, data, trainer, state, history)


def _restore(run_dir: Path, trainer: EBMTrainer, z_train) -> tuple[TrainState, dict[str, list]]:
    """The saved state (nothing refitted) and the history up to its step."""
    try:
        state = trainer.load(run_dir / CHECKPOINT, z_train)
        history = load_history(run_dir / _HISTORY, int(state.step))
    except (OSError, ValueError) as err:  # missing, truncated or foreign
        raise RunError(f"cannot resume the run in {str(run_dir)!r}: {err}") from None
    return state, history


def _result(config: dict, data: RunData, trainer: EBMTrainer, state: TrainState,
            history: dict[str, list]) -> RunResult:
    """``log Z``, the normalised log density and the mode weights of the trained model."""
    potential = trainer.potential(state.ema_params, _standardised(data, data.train))
    flow = trainer.flow(state)
    estimate = log_partition(jax.random.key(config["seed"] + 1), potential, flow, config["log_z_samples"])
    log_det = float(np.log(data.scale).sum())

    def log_density(x):
        return np.asarray(potential.log_prob(_standardised(data, x)), float) - log_det - estimate.log_z

    mode_weights = None
    if data.target is not None:
        z, log_q = flow.sample_and_log_prob(jax.random.key(config["seed"] + 2), (config["log_z_samples"],))
        log_w = np.asarray(potential.log_prob(z) - log_q, float)
        mode_weights = mode_weights_by_importance(data.target, np.asarray(z) * data.scale + data.loc, log_w)
    return RunResult(
        history={name: np.stack(values) for name, values in history.items()},
        samples=np.asarray(state.pool) * data.scale + data.loc,
        log_density=log_density, log_partition=estimate, mode_weights=mode_weights,
    )


def load_potential(run_dir: str | os.PathLike) -> TrainedPotential:
    """A trained run as a normalised :class:`~ebmppl.app.numpyro_run.TrainedPotential` in the data's coordinates.

    Its ``log_prob`` is normalised by the run's ``log Z`` estimate (in
    ``metrics.json``), so it is the model's log-likelihood; its ``flow`` is
    the trained flow (a flowjax distribution in the same coordinates), a fast
    approximate sampler and a proposal for :class:`~ebmppl.numpyro.FlowMCMC`.
    Use it at a latent site of another model, e.g. a prior under noisy
    observations.

    Args:
        run_dir: the folder of a finished NumPyro run.

    Raises:
        RunError: no run in ``run_dir``, a Pyro run, or an unfinished one.
    """
    from flowjax.bijections import Affine
    from flowjax.distributions import Transformed

    run_dir = Path(run_dir)
    config, log_z = read_trained_run(run_dir, "numpyro")
    data = load_run_data(run_dir, config)
    trainer = _trainer(config, data, _network(config, data.train.shape[1]))
    z_train = _standardised(data, data.train)
    try:
        state = trainer.load(run_dir / CHECKPOINT, z_train)
    except (OSError, ValueError) as err:  # a missing, truncated or foreign checkpoint
        raise RunError(f"the checkpoint of {str(run_dir)!r} could not be loaded ({err})") from None
    energy = trainer.potential(state.ema_params, z_train).energy
    loc, scale = jnp.asarray(data.loc, jnp.float32), jnp.asarray(data.scale, jnp.float32)
    flow = Transformed(trainer.flow(state), Affine(loc, scale))
    # "neutra" trains a flow-backbone model, exp(-E) q; the other methods tilt a Gaussian
    base = flow if config["method"] == "neutra" else dist.Normal(loc, BASE_SCALE * scale).to_event(1)
    dim = len(loc)

    def run_energy(x):  # any batch shape: the trained energy maps (n, D) to (n,)
        flat = ((x - loc) / scale).reshape(-1, dim)
        return (energy(flat) + log_z).reshape(jnp.shape(x)[:-1])

    return TrainedPotential(run_energy, event_shape=(dim,), flow=flow, base=base)


def sample_run(run_dir: str | os.PathLike, num: int, seed: int = 0, num_chains: int = 20,
               num_warmup: int = 200, progress: bool = True) -> SampleResult:
    """``num`` draws of a trained run by FlowMCMC with its frozen flow.

    Args:
        run_dir: the folder of a finished NumPyro run.
        num: the number of draws.
        seed: the random seed.
        num_chains: vectorized chains, each started at a draw of the flow.
        num_warmup: warm-up steps per chain (the flow is not refitted).
        progress: show a progress bar.

    Raises:
        RunError: as :func:`load_potential`.
    """
    from numpyro.infer import MCMC

    from ebmppl.numpyro.kernels import FlowMCMC, WarmupSchedule

    potential = load_potential(run_dir)

    def model():
        numpyro.sample("x", potential)

    kernel = FlowMCMC(model, flow=potential.flow, schedule=WarmupSchedule(fit_iterations=(), window=1))
    per_chain = math.ceil(num / num_chains)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=per_chain, num_chains=num_chains,
                chain_method="vectorized", progress_bar=progress)
    init_key, run_key = jax.random.split(jax.random.key(seed))
    mcmc.run(run_key, init_params={"x": potential.flow.sample(init_key, (num_chains,))},
             extra_fields=("accept_prob", "global_accept_prob"))
    extra = mcmc.get_extra_fields()
    return SampleResult.from_chains(np.asarray(mcmc.get_samples(group_by_chain=True)["x"]), num,
                                    np.mean(extra["accept_prob"]), np.mean(extra["global_accept_prob"]))
