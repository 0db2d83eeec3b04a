"""Training runs of the command line, and trained runs as ``Potential`` s (Pyro).

``ebmppl train --backend pyro`` calls :func:`train`; :func:`load_potential`
turns its folder into a normalised ``Potential`` for use in another model,
and :func:`sample_run` draws from it with ``FlowMCMC``.

Example:
    >>> import tempfile, torch
    >>> from ebmppl.cli import main
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

import json
import math
import os
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import AffineTransform, ComposeTransform

from ebmppl.pyro.partition import log_partition
from ebmppl.pyro.potential import Potential
from ebmppl.pyro.training import EBMTrainer
from ebmppl.runs import (
    BASE_SCALE,
    RunData,
    RunError,
    min_bulk_ess,
    mode_weights_by_importance,
    read_config,
    training_loop,
)

__all__ = ["load_potential", "sample_run", "train"]

CHECKPOINT = "checkpoint.pt"


def _network(config: dict, dim: int) -> nn.Module:
    torch.manual_seed(config["seed"])
    sizes = [dim] + [config["width"]] * config["depth"]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.SiLU()]
    net = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))
    with torch.no_grad():
        net[-1].weight.mul_(0.01)  # E ≈ 0 at the start
    return net


def _trainer(config: dict, data: RunData, net: nn.Module) -> EBMTrainer:
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


def train(run_dir: Path, config: dict, data: RunData, resume: bool, progress: bool = True) -> dict:
    """Train (or resume) the run in ``run_dir``; returns what the report needs (as the NumPyro ``train``)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(config["seed"])
    net = _network(config, data.train.shape[1])
    trainer = _trainer(config, data, net)
    z_train = _standardised(data, data.train)
    trainer.init(z_train)
    if resume and (run_dir / CHECKPOINT).exists():  # none yet: interrupted before the first step
        try:
            trainer.load(run_dir / CHECKPOINT, z_train)
        except (OSError, ValueError) as err:  # missing, truncated or foreign
            raise RunError(f"cannot resume the run in {str(run_dir)!r}: {err}") from None

    def step() -> dict:
        _, stats = trainer.step(z_train)
        return stats

    training_loop(step, lambda _: trainer.save(run_dir / CHECKPOINT), trainer.num_steps, config["steps"],
                  config["checkpoint_every"], progress)

    log_det = float(np.log(data.scale).sum())
    with torch.no_grad(), trainer.averaged_params():
        pyro.set_rng_seed(config["seed"] + 1)
        estimate = log_partition(trainer.potential, trainer.flow, config["log_z_samples"])
        potential = _frozen(trainer.potential, net)

    def log_density(x):
        with torch.no_grad():
            return potential.log_prob(_standardised(data, x)).double().numpy() - log_det - estimate.log_z

    result = dict(
        history={name: np.asarray(values) for name, values in trainer.history.items()},
        samples=trainer.pool.numpy() * data.scale + data.loc,
        log_density=log_density,
        log_z=estimate.log_z, log_z_stderr=estimate.stderr, log_z_ess=estimate.ess,
    )
    if data.target is not None:
        with torch.no_grad():
            pyro.set_rng_seed(config["seed"] + 2)
            z, log_q = trainer.flow().rsample_and_log_prob((config["log_z_samples"],))
            log_w = (potential.log_prob(z) - log_q).double().numpy()
        result["mode_weights"] = mode_weights_by_importance(data.target, z.numpy() * data.scale + data.loc, log_w)
    return result


def _frozen(potential: Potential, net: nn.Module) -> Potential:
    """The potential with a copy of the network as it is now (e.g. within ``averaged_params``)."""
    import copy

    frozen = copy.deepcopy(net).requires_grad_(False)
    return Potential(lambda y: frozen(y).squeeze(-1), event_shape=tuple(potential.event_shape), base=potential.base)


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


def load_potential(run_dir: str | os.PathLike) -> Potential:
    """A trained run as a normalised :class:`~ebmppl.pyro.Potential` in the data's coordinates.

    Its ``log_prob`` is normalised by the run's ``log Z`` estimate (in
    ``metrics.json``), so it is the model's log-likelihood; its ``flow``
    attribute is the trained flow (a module, in the same coordinates), a
    fast approximate sampler and a proposal for :class:`~ebmppl.pyro.FlowMCMC`.
    Use it at a latent site of another model, e.g. a prior under noisy
    observations. Pyro's parameter store is not touched.

    Raises:
        RunError: no run in ``run_dir``, a NumPyro run, or an unfinished one.
    """
    from ebmppl.pyro.flows import default_flow

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config["backend"] != "pyro":
        raise RunError(f"{str(run_dir)!r} was trained with the {config['backend']} backend: use "
                       f"ebmppl.{config['backend']}.load_potential")
    if not (run_dir / "metrics.json").is_file():
        raise RunError(f"the run in {str(run_dir)!r} has not finished training (no metrics.json); resume it first")
    loc = torch.tensor(config["loc"], dtype=torch.float32)
    scale = torch.tensor(config["scale"], dtype=torch.float32)
    dim = len(loc)
    try:
        state = torch.load(run_dir / CHECKPOINT, weights_only=False)
        net = _network(config, dim)
        with torch.no_grad():
            for param, value in zip(net.parameters(), state["ema_params"], strict=True):
                param.copy_(value)
        flow = default_flow(dim)
        flow.load_state_dict(state["flow"])
    except Exception as err:  # a missing, truncated or foreign checkpoint
        raise RunError(f"the checkpoint of {str(run_dir)!r} could not be loaded ({err})") from None
    net.requires_grad_(False)
    flow.requires_grad_(False)
    log_z = json.loads((run_dir / "metrics.json").read_text())["log_z"]
    flow = _AffineFlow(flow, loc, scale)
    # "neutra" trains a flow-backbone model, exp(-E) q; the other methods tilt a Gaussian
    base = flow if config["method"] == "neutra" else dist.Normal(loc, BASE_SCALE * scale).to_event(1)
    potential = Potential(lambda x: net((x - loc) / scale).squeeze(-1) + log_z, event_shape=(dim,), base=base)
    potential.flow = flow
    return potential


def sample_run(run_dir: str | os.PathLike, num: int, seed: int = 0, num_chains: int = 20,
               num_warmup: int = 200, progress: bool = True) -> dict:
    """``num`` draws of a trained run by FlowMCMC with its frozen flow (as the NumPyro ``sample_run``)."""
    from pyro.infer import MCMC

    from ebmppl.pyro.kernels import FlowMCMC, WarmupSchedule

    potential = load_potential(run_dir)
    dim = potential.event_shape[0]

    def model():
        pyro.sample("x", potential)

    pyro.set_rng_seed(seed)
    kernel = FlowMCMC(model, num_walkers=num_chains, flow=potential.flow,
                      schedule=WarmupSchedule(fit_iterations=(), window=1))
    per_chain = math.ceil(num / num_chains)
    mcmc = MCMC(kernel, num_samples=per_chain, warmup_steps=num_warmup, disable_progbar=not progress,
                initial_params={"x": potential.flow().sample((num_chains,))})
    mcmc.run()
    x = mcmc.get_samples(group_by_chain=True)["x"].numpy()  # (chains, draws, D)
    stats = kernel.sample_stats[-1]
    return dict(
        draws=x.transpose(1, 0, 2).reshape(-1, dim)[:num],
        accept_prob=stats["accept_prob"].mean().item(),
        global_accept_prob=stats["global_accept_prob"].mean().item(),
        min_ess=min_bulk_ess(x),
    )
