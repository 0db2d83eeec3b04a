"""The Pyro part of the command line: train a run, load it as a ``Potential``, sample it.

``ebmppl train --backend pyro`` calls :func:`train`; :func:`load_potential`
turns its folder into a normalised :class:`TrainedPotential` for use in
another model, and :func:`sample_run` draws from it with ``FlowMCMC``.
:mod:`ebmppl.app.numpyro_run` is the same for NumPyro.

Example:
    >>> import tempfile, torch
    >>> from ebmppl.app.cli import main
    >>> from ebmppl.pyro import load_potential
    >>> run = tempfile.mkdtemp() + "/run"
    >>> main(["train", "--backend", "pyro", "--steps", "5", "--out", run, "--quiet"])  # doctest: +ELLIPSIS
    ebmppl: trained flow (pyro) on line_of_four ...
    0
    >>> potential = load_potential(run)  # normalised: use it at a latent site, e.g. as a prior
    >>> potential.log_prob(torch.zeros(3, 2)).shape, potential.flow().sample((4,)).shape
    (torch.Size([3]), torch.Size([4, 2]))
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import AffineTransform, ComposeTransform

from ebmppl.app.config import BASE_SCALE, RunError, read_trained_run
from ebmppl.app.data import RunData
from ebmppl.app.loop import load_history, save_history, training_loop
from ebmppl.app.report import RunResult, SampleResult, mode_weights_by_importance
from ebmppl.pyro.partition import log_partition
from ebmppl.pyro.potential import Potential
from ebmppl.pyro.training import EBMTrainer, TrainState

__all__ = ["CHECKPOINT", "TrainedPotential", "load_potential", "sample_run", "train"]

#: The trainer's checkpoint in the run folder.
CHECKPOINT = "checkpoint.pt"
_HISTORY = "history.npz"  # the statistics per step, saved beside the checkpoint


class TrainedPotential(Potential):
    """A trained run's model: a :class:`~ebmppl.pyro.Potential` that carries the run's trained flow.

    ``flow`` is kept by ``expand`` (as Pyro does under a plate).

    Args:
        energy: as for ``Potential``.
        event_shape: as for ``Potential``.
        flow: the trained flow (a module whose call returns a distribution
            of event shape ``event_shape``), a fast approximate sampler and a
            proposal for :class:`~ebmppl.pyro.FlowMCMC`.
        base: as for ``Potential``.
        support: as for ``Potential``.

    Example:
        >>> from ebmppl.pyro.flows import default_flow
        >>> flow = default_flow(2)
        >>> potential = TrainedPotential(lambda x: (x**2).sum(-1), event_shape=(2,), flow=flow)
        >>> potential.expand((3,)).flow is flow, potential.flow().sample((4,)).shape
        (True, torch.Size([4, 2]))
    """

    def __init__(self, energy: Callable, *, event_shape: tuple[int, ...], flow: nn.Module, base=None, support=None,
                 validate_args: bool | None = None):
        super().__init__(energy, event_shape=event_shape, base=base, support=support, validate_args=validate_args)
        self.flow = flow

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(TrainedPotential, _instance)
        new.flow = self.flow
        return super().expand(batch_shape, _instance=new)


def _network(config: dict, dim: int) -> nn.Module:
    """The energy network, its last layer scaled so that ``E ≈ 0`` at the start."""
    torch.manual_seed(config["seed"])
    sizes = [dim] + [config["width"]] * config["depth"]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.SiLU()]
    net = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))
    with torch.no_grad():
        net[-1].weight.mul_(0.01)
    return net


def _trainer(config: dict, data: RunData, net: nn.Module) -> EBMTrainer:
    """The run's model (``net`` tilting ``N(0, 3²)`` in standardised coordinates) and its trainer."""
    dim = data.train.shape[1]
    base = dist.Normal(0.0, BASE_SCALE).expand([dim]).to_event(1)

    def model(x):
        energy = pyro.module("energy", net)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", Potential(lambda y: energy(y).squeeze(-1), event_shape=(dim,), base=base), obs=x)

    # the learning rate decays to lr_floor x its initial value over the run
    optim = pyro.optim.ClippedAdam({"lr": config["learning_rate"],
                                    "lrd": config["lr_floor"] ** (1.0 / config["steps"])})
    centres = None if data.target is None else (data.target.centres - data.loc) / data.scale
    return EBMTrainer(
        model, optim=optim, method=config["method"], batch_size=config["batch_size"],
        pool_size=config["pool_size"], num_rounds=config["num_rounds"], num_local_steps=None if config["method"] == "neutra" else config["num_local_steps"],
        num_particles=config["num_particles"], ema_decay=config["ema_decay"], mode_centres=centres,
    )


def _standardised(data: RunData, x) -> torch.Tensor:
    return torch.as_tensor((np.asarray(x) - data.loc) / data.scale, dtype=torch.float32)


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
    pyro.clear_param_store()
    pyro.set_rng_seed(config["seed"])
    trainer = _trainer(config, data, _network(config, data.train.shape[1]))
    z_train = _standardised(data, data.train)
    if resume and (run_dir / CHECKPOINT).exists():  # none yet: interrupted before the first step
        state, history = _restore(run_dir, trainer, z_train)
    else:
        state, history = trainer.init(z_train), {}

    def step() -> dict:
        nonlocal state
        state, stats = trainer.update(state, z_train)
        for name, value in stats.items():
            history.setdefault(name, []).append(np.asarray(value))
        return stats

    def save(_steps_done: int) -> None:
        save_history(run_dir / _HISTORY, history)  # before the checkpoint: at least as long
        trainer.save(run_dir / CHECKPOINT, state)

    training_loop(step, save, state.step, config["steps"], config["checkpoint_every"], progress)
    return _result(config, data, trainer, state, history)


def _restore(run_dir: Path, trainer: EBMTrainer, z_train: torch.Tensor) -> tuple[TrainState, dict[str, list]]:
    """The saved state (nothing refitted) and the history up to its step."""
    try:
        state = trainer.load(run_dir / CHECKPOINT, z_train)
        history = load_history(run_dir / _HISTORY, state.step)
    except (OSError, ValueError) as err:  # missing, truncated or foreign
        raise RunError(f"cannot resume the run in {str(run_dir)!r}: {err}") from None
    return state, history


def _result(config: dict, data: RunData, trainer: EBMTrainer, state: TrainState,
            history: dict[str, list]) -> RunResult:
    """``log Z``, the normalised log density and the mode weights of the trained model."""
    potential = trainer.potential(state.ema_params, _standardised(data, data.train))
    flow = trainer.flow(state)
    with torch.no_grad():
        pyro.set_rng_seed(config["seed"] + 1)
        estimate = log_partition(potential, flow, config["log_z_samples"])
    log_det = float(np.log(data.scale).sum())

    def log_density(x):
        with torch.no_grad():
            return potential.log_prob(_standardised(data, x)).double().numpy() - log_det - estimate.log_z

    mode_weights = None
    if data.target is not None:
        with torch.no_grad():
            pyro.set_rng_seed(config["seed"] + 2)
            z, log_q = flow().rsample_and_log_prob((config["log_z_samples"],))
            log_w = (potential.log_prob(z) - log_q).double().numpy()
        mode_weights = mode_weights_by_importance(data.target, z.numpy() * data.scale + data.loc, log_w)
    return RunResult(
        history={name: np.stack(values) for name, values in history.items()},
        samples=state.pool.numpy() * data.scale + data.loc,
        log_density=log_density, log_partition=estimate, mode_weights=mode_weights,
    )


class _AffineFlow(nn.Module):
    """A flow module moved to data coordinates: ``x = loc + scale · u``."""

    def __init__(self, flow: nn.Module, loc: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.flow = flow
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)

    def forward(self):
        return _AffineFlowDistribution(self.flow(), self.loc, self.scale)


class _AffineFlowDistribution(torch.distributions.Distribution):
    arg_constraints: dict = {}
    support = torch.distributions.constraints.real_vector
    has_rsample = True

    def __init__(self, inner, loc, scale):
        self.inner, self.loc, self.scale = inner, loc, scale
        self.log_scale = scale.log().sum()
        self.transform = ComposeTransform([AffineTransform(loc, scale, event_dim=1).inv, inner.transform])
        super().__init__(torch.Size(), inner.event_shape, validate_args=False)

    def log_prob(self, x):
        return self.inner.log_prob((x - self.loc) / self.scale) - self.log_scale

    def rsample_and_log_prob(self, sample_shape=torch.Size()):
        u, log_q = self.inner.rsample_and_log_prob(sample_shape)
        return self.loc + self.scale * u, log_q - self.log_scale

    def rsample(self, sample_shape=torch.Size()):
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)


def _load_checkpoint(run_dir: Path, config: dict, dim: int) -> tuple[nn.Module, nn.Module]:
    """The run's averaged energy network and its flow (standardised coordinates), frozen."""
    from ebmppl.pyro.flows import default_flow

    try:
        state = torch.load(run_dir / CHECKPOINT, weights_only=False)["state"]
        net = _network(config, dim)
        with torch.no_grad():
            for param, value in zip(net.parameters(), state["ema_params"].values(), strict=True):
                param.copy_(value)
        flow = default_flow(dim)
        flow.load_state_dict(state["flow_params"])
    except Exception as err:  # a missing, truncated or foreign checkpoint
        raise RunError(f"the checkpoint of {str(run_dir)!r} could not be loaded ({err})") from None
    return net.requires_grad_(False), flow.requires_grad_(False)


def load_potential(run_dir: str | os.PathLike) -> TrainedPotential:
    """A trained run as a normalised :class:`~ebmppl.app.pyro_run.TrainedPotential` in the data's coordinates.

    Its ``log_prob`` is normalised by the run's ``log Z`` estimate (in
    ``metrics.json``), so it is the model's log-likelihood; its ``flow`` is
    the trained flow (a module, in the same coordinates), a fast approximate
    sampler and a proposal for :class:`~ebmppl.pyro.FlowMCMC`. Use it at a
    latent site of another model, e.g. a prior under noisy observations.
    Pyro's parameter store is not touched.

    Args:
        run_dir: the folder of a finished Pyro run.

    Raises:
        RunError: no run in ``run_dir``, a NumPyro run, or an unfinished one.
    """
    run_dir = Path(run_dir)
    config, log_z = read_trained_run(run_dir, "pyro")
    loc = torch.tensor(config["loc"], dtype=torch.float32)
    scale = torch.tensor(config["scale"], dtype=torch.float32)
    dim = len(loc)
    net, flow = _load_checkpoint(run_dir, config, dim)
    flow = _AffineFlow(flow, loc, scale)
    # "neutra" trains a flow-backbone model, exp(-E) q; the other methods tilt a Gaussian
    base = flow if config["method"] == "neutra" else dist.Normal(loc, BASE_SCALE * scale).to_event(1)
    return TrainedPotential(lambda x: net((x - loc) / scale).squeeze(-1) + log_z, event_shape=(dim,), flow=flow,
                            base=base)


def sample_run(run_dir: str | os.PathLike, num: int, seed: int = 0, num_chains: int = 20,
               num_warmup: int = 200, progress: bool = True) -> SampleResult:
    """``num`` draws of a trained run by FlowMCMC with its frozen flow.

    Args:
        run_dir: the folder of a finished Pyro run.
        num: the number of draws.
        seed: the random seed.
        num_chains: walkers of one FlowMCMC chain, each started at a draw of the flow.
        num_warmup: warm-up steps (the flow is not refitted).
        progress: show a progress bar.

    Raises:
        RunError: as :func:`load_potential`.
    """
    from pyro.infer import MCMC

    from ebmppl.pyro.kernels import FlowMCMC, WarmupSchedule

    potential = load_potential(run_dir)

    def model():
        pyro.sample("x", potential)

    pyro.set_rng_seed(seed)
    kernel = FlowMCMC(model, num_walkers=num_chains, flow=potential.flow,
                      schedule=WarmupSchedule(fit_iterations=(), window=1))
    per_chain = math.ceil(num / num_chains)
    mcmc = MCMC(kernel, num_samples=per_chain, warmup_steps=num_warmup, disable_progbar=not progress,
                initial_params={"x": potential.flow().sample((num_chains,))})
    mcmc.run()
    stats = kernel.sample_stats[-1]
    return SampleResult.from_chains(mcmc.get_samples(group_by_chain=True)["x"].numpy(), num,
                                    stats["accept_prob"].mean().item(), stats["global_accept_prob"].mean().item())
