"""Training runs of the command line, and trained runs as ``Potential`` s (NumPyro).

``ebmppl train --backend numpyro`` calls :func:`train`; :func:`load_potential`
turns its folder into a normalised ``Potential`` for use in another model,
and :func:`sample_run` draws from it with ``FlowMCMC``.

Example:
    >>> import tempfile, jax, jax.numpy as jnp
    >>> from ebmppl.cli import main
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

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.contrib.module import eqx_module

from ebmppl.numpyro.partition import log_partition
from ebmppl.numpyro.potential import Potential
from ebmppl.numpyro.training import EBMTrainer, load_checkpoint, save_checkpoint
from ebmppl.runs import (
    BASE_SCALE,
    RunData,
    RunError,
    load_run_data,
    min_bulk_ess,
    mode_weights_by_importance,
    read_config,
    training_loop,
)

__all__ = ["load_potential", "sample_run", "train"]

CHECKPOINT = "checkpoint.npz"
HISTORY = "history.npz"


def _trainer(config: dict, data: RunData) -> EBMTrainer:
    dim = data.train.shape[1]
    net = eqx.nn.MLP(dim, "scalar", config["width"], config["depth"], activation=jax.nn.silu,
                     key=jax.random.key(config["seed"]))
    net = eqx.tree_at(lambda m: m.layers[-1].weight, net, net.layers[-1].weight * 0.01)  # E ≈ 0 at the start
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


def _standardised(data: RunData, x):
    return jnp.asarray((np.asarray(x) - data.loc) / data.scale, jnp.float32)


def train(run_dir: Path, config: dict, data: RunData, resume: bool, progress: bool = True) -> dict:
    """Train (or resume) the run in ``run_dir``; returns what the report needs.

    Returns:
        A dict with ``history`` (numpy arrays), ``samples`` (the chains, in
        data coordinates), ``log_density`` (the normalised model, numpy in and
        out), ``log_z``, ``log_z_stderr``, ``log_z_ess`` and ``mode_weights``
        (the model's, by importance sampling, for data with known modes).
    """
    trainer = _trainer(config, data)
    z_train = _standardised(data, data.train)
    state = trainer.init(jax.random.key(config["seed"]), z_train)
    history: dict[str, list] = {}
    if resume and (run_dir / CHECKPOINT).exists():  # none yet: interrupted before the first step
        try:
            state = load_checkpoint(run_dir / CHECKPOINT, like=state)
            with np.load(run_dir / HISTORY) as saved:  # written before the checkpoint: at least as long
                history = {name: list(saved[name][: int(state.step)]) for name in saved.files}
        except (OSError, ValueError) as err:  # missing, truncated or foreign
            raise RunError(f"cannot resume the run in {str(run_dir)!r}: {err}") from None

    def step() -> dict:
        nonlocal state
        state, stats = trainer.update(state, z_train)
        for name, value in stats.items():
            if name != "finite":
                history.setdefault(name, []).append(np.asarray(value))
        return {name: float(stats[name]) for name in ("loss", "energy_data", "energy_negatives", "global_accept_prob")}

    def save(_steps_done: int) -> None:
        tmp = run_dir / f".{HISTORY}.tmp-{os.getpid()}"
        with open(tmp, "wb") as handle:
            np.savez(handle, **{name: np.stack(values) for name, values in history.items()})
        os.replace(tmp, run_dir / HISTORY)
        save_checkpoint(run_dir / CHECKPOINT, state)

    training_loop(step, save, int(state.step), config["steps"], config["checkpoint_every"], progress)

    potential = trainer.potential(state.ema_params, z_train)
    flow = trainer.flow(state)
    estimate = log_partition(jax.random.key(config["seed"] + 1), potential, flow, config["log_z_samples"])
    log_det = float(np.log(data.scale).sum())

    def log_density(x):
        return np.asarray(potential.log_prob(_standardised(data, x)), float) - log_det - estimate.log_z

    result = dict(
        history={name: np.stack(values) for name, values in history.items()},
        samples=np.asarray(state.pool) * data.scale + data.loc,
        log_density=log_density,
        log_z=estimate.log_z, log_z_stderr=estimate.stderr, log_z_ess=estimate.ess,
    )
    if data.target is not None:
        z, log_q = flow.sample_and_log_prob(jax.random.key(config["seed"] + 2), (config["log_z_samples"],))
        log_w = np.asarray(potential.log_prob(z) - log_q, float)
        result["mode_weights"] = mode_weights_by_importance(data.target, np.asarray(z) * data.scale + data.loc,
                                                            log_w)
    return result


def load_potential(run_dir: str | os.PathLike) -> Potential:
    """A trained run as a normalised :class:`~ebmppl.numpyro.Potential` in the data's coordinates.

    Its ``log_prob`` is normalised by the run's ``log Z`` estimate (in
    ``metrics.json``), so it is the model's log-likelihood; its ``flow``
    attribute is the trained flow (a flowjax distribution in the same
    coordinates), a fast approximate sampler and a proposal for
    :class:`~ebmppl.numpyro.FlowMCMC`. Use it at a latent site of another
    model, e.g. a prior under noisy observations.

    Raises:
        RunError: no run in ``run_dir``, a Pyro run, or an unfinished one.
    """
    import json

    from flowjax.bijections import Affine
    from flowjax.distributions import Transformed

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config["backend"] != "numpyro":
        raise RunError(f"{str(run_dir)!r} was trained with the {config['backend']} backend: use "
                       f"ebmppl.{config['backend']}.load_potential")
    if not (run_dir / "metrics.json").is_file():
        raise RunError(f"the run in {str(run_dir)!r} has not finished training (no metrics.json); resume it first")
    data = load_run_data(run_dir, config)
    trainer = _trainer(config, data)
    z_train = _standardised(data, data.train)
    state = load_checkpoint(run_dir / CHECKPOINT, like=trainer.init(jax.random.key(0), z_train))
    log_z = json.loads((run_dir / "metrics.json").read_text())["log_z"]
    energy = trainer.potential(state.ema_params, z_train).energy
    loc, scale = jnp.asarray(data.loc, jnp.float32), jnp.asarray(data.scale, jnp.float32)
    flow = Transformed(trainer.flow(state), Affine(loc, scale))
    # "neutra" trains a flow-backbone model, exp(-E) q; the other methods tilt a Gaussian
    base = flow if config["method"] == "neutra" else dist.Normal(loc, BASE_SCALE * scale).to_event(1)
    dim = len(loc)

    def run_energy(x):  # any batch shape: the trained energy maps (n, D) to (n,)
        flat = ((x - loc) / scale).reshape(-1, dim)
        return (energy(flat) + log_z).reshape(jnp.shape(x)[:-1])

    potential = Potential(run_energy, event_shape=(dim,), base=base)
    potential.flow = flow
    return potential


def sample_run(run_dir: str | os.PathLike, num: int, seed: int = 0, num_chains: int = 20,
               num_warmup: int = 200, progress: bool = True) -> dict:
    """``num`` draws of a trained run by FlowMCMC with its frozen flow.

    Returns:
        A dict with ``draws`` (``(num, D)``), ``accept_prob``,
        ``global_accept_prob`` (means over draws and chains) and ``min_ess``
        (smallest bulk ESS over coordinates).
    """
    from numpyro.infer import MCMC

    from ebmppl.numpyro.kernels import FlowMCMC, WarmupSchedule

    potential = load_potential(run_dir)
    dim = potential.event_shape[0]

    def model():
        numpyro.sample("x", potential)

    kernel = FlowMCMC(model, flow=potential.flow, schedule=WarmupSchedule(fit_iterations=(), window=1))
    per_chain = math.ceil(num / num_chains)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=per_chain, num_chains=num_chains,
                chain_method="vectorized", progress_bar=progress)
    init_key, run_key = jax.random.split(jax.random.key(seed))
    mcmc.run(run_key, init_params={"x": potential.flow.sample(init_key, (num_chains,))},
             extra_fields=("accept_prob", "global_accept_prob"))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    extra = mcmc.get_extra_fields()
    return dict(
        draws=x.transpose(1, 0, 2).reshape(-1, dim)[:num],
        accept_prob=float(np.mean(extra["accept_prob"])),
        global_accept_prob=float(np.mean(extra["global_accept_prob"])),
        min_ess=min_bulk_ess(x),
    )
