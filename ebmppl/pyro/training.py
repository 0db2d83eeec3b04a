"""``EBMTrainer``: maximum-likelihood training of an energy with flow-assisted negatives (Pyro).

The model declares what is trained: a :class:`~ebmppl.pyro.Potential` at an
observed site, in a plate over the data, whose energy is a
``torch.nn.Module`` registered with ``pyro.module``. The trainer finds that
site, the energy's parameters and the data by tracing the model, as SVI does.

One :meth:`EBMTrainer.step` (``method="flow"``, Grenioux et al. 2023): draw a
data batch ``x+``; advance ``batch_size`` chains of a persistent pool with
``num_rounds`` rounds of one i-SIR move proposed by the flow and
``num_local_steps`` MALA moves; the final states are the negatives ``x-`` and
go back to the pool; step the energy's parameters along
``mean ∇E(x+) - mean ∇E(x-)`` and the flow's along ``mean ∇ log λ(x-)``
(forward KL on the negatives). The paper's baselines use the same local
kernel without the flow: ``method="ula"`` keeps persistent chains moved by
MALA alone, and ``"short-run"`` starts the chains from standard normal noise
at every step. ``method="neutra"`` is the NT-EBM of Nijkamp et al. (2020):
the flow is first fitted to the data by maximum likelihood and then frozen as
the model's backbone, ``p(x) ∝ exp(-E(x)) q(x)``; the negatives come from
``num_local_steps`` (128) MALA steps in the flow's latent space, where the log
density is ``log ρ(z) - E(g(z))``, started at flow draws. Randomness comes from torch's generator (``pyro.set_rng_seed``).

Example:
    >>> import torch, pyro, pyro.distributions as dist
    >>> from ebmppl.pyro import EBMTrainer, Potential
    >>> pyro.set_rng_seed(0); pyro.clear_param_store()
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))
    >>> base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)  # keeps exp(-E) normalizable
    >>> def model(x):
    ...     energy = pyro.module("energy", net)
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", Potential(lambda y: energy(y).squeeze(-1), event_shape=(2,), base=base), obs=x)
    >>> trainer = EBMTrainer(model, optim=pyro.optim.Adam({"lr": 1e-3}), batch_size=64, pool_size=256)
    >>> data = torch.randn(512, 2)
    >>> losses = [trainer.step(data)[0] for _ in range(5)]
    >>> len(trainer.history["loss"])
    5
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import pyro
import torch
from pyro import poutine

from ebmppl.options import TrainerOptions
from ebmppl.pyro.flows import (
    as_flow_module,
    base_log_prob,
    base_maps,
    check_flow,
    default_flow,
    fit_flow,
    identity_whitening,
    proposal_log_prob,
    proposal_sample_and_log_prob,
)
from ebmppl.pyro.moves.isir import isir_step
from ebmppl.pyro.moves.hmc import LocalState, hmc_step
from ebmppl.pyro.moves.hmc import with_grad
from ebmppl.pyro.potential import Potential

__all__ = ["EBMTrainer"]

CHECKPOINT_FORMAT = "ebmppl-pyro-train-state-v1"


class EBMTrainer:
    """Joint training of a ``Potential``'s energy and a flow, reading like Pyro's SVI.

    Args:
        model: a Pyro model with one observed ``Potential`` site in a plate over
            the data; its parameters (``pyro.module`` / ``pyro.param``) are trained.
        flow: the proposal: ``None`` for :func:`~ebmppl.pyro.flows.default_flow`,
            a factory ``dim -> flow``, or a flow with an exact inverse.
        optim: a Pyro optimizer (``pyro.optim.Adam({...})``...); the energy and
            the flow each get a torch optimizer of its kind and arguments.
        method: ``"flow"``, ``"ula"``, ``"short-run"`` or ``"neutra"``. With
            ``"neutra"`` the fitted flow takes the place of the Potential's
            ``base``: the trained density is ``exp(-energy(x)) q(x)``, and
            :attr:`potential` is the flow-backbone ``Potential``.
        batch_size: data points and negatives per step.
        pool_size: persistent chains (``"neutra"``: the latest negatives).
        num_rounds: rounds per step, each an i-SIR move (``"flow"`` only) and
            ``num_local_steps`` MALA moves (``"neutra"``: one round).
        num_local_steps: MALA steps per round; ``None`` for 25, or 128 with
            ``"neutra"``.
        num_particles: i-SIR candidates per chain.
        step_size: initial MALA step size, adapted toward ``target_accept_prob``;
            ``None`` for 0.05, or 0.5 (in the latent space) with ``"neutra"``.
        target_accept_prob: MALA acceptance aimed at; ``None`` for 0.65, or
            0.75 with ``"neutra"``.
        energy_penalty: ``c`` of the ``c · mean(E(x+)² + E(x-)²)`` penalty.
        max_grad_norm: gradients are clipped to this global norm.
        max_failures: consecutive non-finite steps tolerated before an error.
        mode_centres: optional ``(K, D)`` centres; the history then records the
            weights of the negatives' modes (nearest centre).
        ema_decay: if given (e.g. ``0.99``), the trainer keeps the exponential
            moving average ``a <- decay·a + (1-decay)·θ`` of the parameters,
            which damps the swings of a stochastic optimizer; use it with
            :meth:`averaged_params`. The chains always follow the current iterate.
        flow_fit_steps: ``"neutra"`` only: Adam steps (learning rate
            ``flow_learning_rate``, minibatches of ``batch_size``) of the
            maximum-likelihood fit of the flow to the data at set-up.
        flow_learning_rate: see ``flow_fit_steps``.
    """

    def __init__(
        self,
        model: Callable,
        *,
        flow: Any = None,
        optim,
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
        self.model, self.method, self.optim = model, method, optim
        self._flow_arg = flow
        self.batch_size, self.pool_size = batch_size, pool_size
        self.num_rounds, self.num_local_steps = num_rounds, num_local_steps
        self.num_particles, self.step_size = num_particles, float(step_size)
        self.target_accept_prob = float(target_accept_prob)
        self.energy_penalty, self.max_grad_norm = float(energy_penalty), float(max_grad_norm)
        self.max_failures = max_failures
        self.mode_centres = None if mode_centres is None else torch.as_tensor(mode_centres, dtype=torch.float32)
        self.ema_decay = ema_decay
        self.flow_fit_steps, self.flow_learning_rate = int(flow_fit_steps), float(flow_learning_rate)
        self.num_steps = 0
        self.history: dict[str, list] = {}
        self._ready = False
        self._failures = 0

    # --- set-up ----------------------------------------------------------------------------
    def _setup(self, args, kwargs, fit_backbone: bool = True) -> None:
        with poutine.block():
            trace = poutine.trace(self.model).get_trace(*args, **kwargs)
        sites = [
            site for site in trace.nodes.values()
            if site["type"] == "sample" and site["is_observed"] and isinstance(_base_fn(site["fn"]), Potential)
        ]
        if len(sites) != 1:
            raise ValueError(f"EBMTrainer needs exactly one observed Potential site in the model, found {len(sites)}")
        site = sites[0]
        names = [name for name, node in trace.nodes.items() if node["type"] == "param"]
        self.params = [pyro.param(name).unconstrained() for name in names]
        if not self.params:
            raise ValueError("the model registers no parameters (pyro.module / pyro.param) to train")
        self.potential = _base_fn(site["fn"])
        if len(self.potential.event_shape) != 1:
            raise ValueError(f"EBMTrainer trains on flat points (event_shape (D,)), got {tuple(self.potential.event_shape)}")
        data = site["value"].detach().reshape((-1,) + tuple(self.potential.event_shape))
        bad = torch.nonzero(~torch.isfinite(data).all(-1)).flatten()
        if bad.numel():
            raise ValueError(f"the data have {bad.numel()} rows with NaN or infinite values (rows {bad[:5].tolist()})")
        self.data, dim = data, data.shape[-1]
        if self._flow_arg is None or (callable(self._flow_arg) and not isinstance(self._flow_arg, torch.nn.Module)):
            factory = default_flow if self._flow_arg is None else self._flow_arg
            flow = as_flow_module(factory(dim))
        else:
            flow = as_flow_module(self._flow_arg)
        self.flow = flow.to(data.device, data.dtype)
        check_flow(self.flow, dim)
        self.ema_params = [p.detach().clone() for p in self.params]
        self.ebm_optimizer = self._make_optimizer(self.params)
        self.flow_optimizer = self._make_optimizer([p for p in self.flow.parameters() if p.requires_grad])
        if self.method == "neutra":  # the backbone: maximum likelihood on the data, then frozen
            if fit_backbone:  # (not when a checkpoint's flow is about to replace it)
                fit_flow([self.flow], data, num_steps=self.flow_fit_steps, batch_size=self.batch_size,
                         learning_rate=self.flow_learning_rate)
            self.flow.requires_grad_(False)
            self.potential = Potential(self.potential.energy, event_shape=tuple(self.potential.event_shape),
                                       base=self.flow)
        with torch.no_grad():
            self.pool = self.flow().sample((self.pool_size,))
        self.current_step_size = self.step_size
        self.history = {name: [] for name in self._history_names()}
        self._ready = True

    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        args = self.optim.pt_optim_args
        args = args(None, None) if callable(args) else args
        return self.optim.pt_optim_constructor(params, **args)

    def _history_names(self):
        names = ("loss", "energy_data", "energy_negatives", "global_accept_prob", "local_accept_prob")
        return names + (("mode_weights",) if self.mode_centres is not None else ())

    def init(self, *args, **kwargs) -> None:
        """Set up from the model and its arguments (the data) without a step: parameters, flow, pool.

        :meth:`step` does it when needed; call it first to save (or inspect)
        the state before any update.
        """
        if not self._ready:
            self._setup(args, kwargs)

    # --- one step -----------------------------------------------------------------------------
    def step(self, *args, **kwargs) -> tuple[float, dict]:
        """One update; returns the loss and the step's statistics.

        A non-finite loss or gradient leaves the parameters unchanged, with a
        warning; ``max_failures`` in a row raise a ``FloatingPointError``.
        """
        if not self._ready:
            self._setup(args, kwargs)
        batch = self.data[torch.randint(0, self.data.shape[0], (self.batch_size,), device=self.data.device)]
        index = torch.randperm(self.pool_size, device=self.pool.device)[: self.batch_size]
        start = self.pool[index]
        if self.method == "short-run":
            start = torch.randn_like(start)
        if self.method == "neutra":
            negatives, global_acc, local_acc = self._advance_latent()
        else:
            negatives, global_acc, local_acc = self._advance(start)

        energy = self.potential.energy
        e_data, e_neg = energy(batch), energy(negatives)
        loss = e_data.mean() - e_neg.mean()
        if self.energy_penalty:
            loss = loss + self.energy_penalty * ((e_data**2).mean() + (e_neg**2).mean())
        self.ebm_optimizer.zero_grad()
        loss.backward()
        ebm_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        flow_norm, flow_loss = torch.zeros(()), None
        if self.method == "flow":
            self.flow_optimizer.zero_grad()
            flow_loss = -self.flow().log_prob(negatives).mean()
            flow_loss.backward()
            flow_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in self.flow.parameters() if p.requires_grad], self.max_grad_norm
            )
        finite = bool(torch.isfinite(loss) & torch.isfinite(ebm_norm) & torch.isfinite(flow_norm))
        finite = finite and bool(torch.isfinite(negatives).all())
        step = self.num_steps
        self.num_steps += 1
        if not finite:
            self._failures += 1
            warnings.warn(f"EBMTrainer: non-finite loss or gradient at step {step}; update skipped")
            if self._failures >= self.max_failures:
                raise FloatingPointError(
                    f"EBMTrainer: {self._failures} updates in a row had a non-finite loss or gradient "
                    f"(the last at step {step}); the energy is NaN or infinite on the data or the negatives"
                )
        else:
            self._failures = 0
            self.ebm_optimizer.step()
            if self.ema_decay is not None:
                with torch.no_grad():
                    for average, param in zip(self.ema_params, self.params):
                        average.lerp_(param.detach(), 1.0 - self.ema_decay)
            if self.method == "flow":
                self.flow_optimizer.step()
            self.pool[index] = negatives
        stats = {
            "loss": loss.item(), "energy_data": e_data.mean().item(), "energy_negatives": e_neg.mean().item(),
            "global_accept_prob": global_acc, "local_accept_prob": local_acc,
        }
        if self.mode_centres is not None:
            nearest = torch.cdist(negatives, self.mode_centres.to(negatives)).argmin(-1)
            stats["mode_weights"] = (torch.bincount(nearest, minlength=len(self.mode_centres)) / len(nearest)).tolist()
        for name, value in stats.items():
            self.history[name].append(value)
        return stats["loss"], stats

    def _advance_latent(self):
        """NT-EBM negatives: MALA on ``log ρ(z) - E(g(z))`` from base draws, mapped by the flow ``g``."""
        forward, _ = base_maps(self.flow)
        energy = self.potential.energy

        def latent(z):
            return base_log_prob(self.flow, z) - energy(forward(z)[0])

        value_and_grad = with_grad(latent)
        z = torch.randn(self.batch_size, self.data.shape[-1], dtype=self.data.dtype, device=self.data.device)
        walkers = LocalState(z, *value_and_grad(z))
        step_size = torch.full_like(walkers.logdensity, self.current_step_size)
        accepts = []
        for _ in range(self.num_local_steps):
            walkers, info = hmc_step(walkers, value_and_grad, step_size, 1)
            accepts.append(float(info.accept_prob.mean()))
        accept = sum(accepts) / max(len(accepts), 1)
        # Robbins-Monro on log(step size) toward the target acceptance
        self.current_step_size *= math.exp(0.1 * (accept - self.target_accept_prob))
        with torch.no_grad():
            negatives = forward(walkers.position)[0]
        return negatives.detach(), 0.0, accept

    def _advance(self, start: torch.Tensor):
        """Move the chains: rounds of an i-SIR move ("flow" only) and MALA moves."""
        potential = self.potential

        def logdensity(x):
            return potential.log_prob(x)

        logdensity_and_grad = with_grad(logdensity)
        whitening = identity_whitening(start.shape[-1], start.dtype, start.device)
        walkers = LocalState(start, *logdensity_and_grad(start))
        global_accepts, local_accepts = [], []
        for _ in range(self.num_rounds):
            if self.method == "flow":
                with torch.no_grad():
                    position, info = isir_step(
                        walkers.position, walkers.logdensity, logdensity,
                        lambda shape: proposal_sample_and_log_prob(self.flow, whitening, shape),
                        lambda x: proposal_log_prob(self.flow, whitening, x), self.num_particles,
                    )
                walkers = LocalState(position, *logdensity_and_grad(position))
                global_accepts.append(float(info.accept_prob.mean()))
            step_size = torch.full_like(walkers.logdensity, self.current_step_size)
            round_accepts = []
            for _ in range(self.num_local_steps):
                walkers, local_info = hmc_step(walkers, logdensity_and_grad, step_size, 1)
                round_accepts.append(float(local_info.accept_prob.mean()))
            accept = sum(round_accepts) / max(len(round_accepts), 1)
            # Robbins-Monro on log(step size) toward the target acceptance
            self.current_step_size *= math.exp(0.1 * (accept - self.target_accept_prob))
            local_accepts.append(accept)
        global_acc = sum(global_accepts) / len(global_accepts) if global_accepts else 0.0
        return walkers.position.detach(), global_acc, sum(local_accepts) / max(len(local_accepts), 1)

    @contextlib.contextmanager
    def averaged_params(self):
        """Within this block the model's parameters are their moving averages (``ema_decay``).

        The current iterates come back on exit. Without ``ema_decay`` the
        block changes nothing.

        Example:
            >>> import torch, pyro, pyro.distributions as dist
            >>> from ebmppl.pyro import EBMTrainer, Potential
            >>> pyro.clear_param_store()
            >>> net, base = torch.nn.Linear(1, 1), dist.Normal(0.0, 1.0).expand([1]).to_event(1)
            >>> def model(x):
            ...     energy = pyro.module("energy", net)
            ...     with pyro.plate("data", x.shape[0]):
            ...         pyro.sample("x", Potential(lambda y: energy(y).squeeze(-1), event_shape=(1,), base=base), obs=x)
            >>> trainer = EBMTrainer(model, optim=pyro.optim.Adam({"lr": 0.1}), batch_size=8, pool_size=8,
            ...                      num_rounds=1, num_local_steps=1, ema_decay=0.9)
            >>> _ = trainer.step(torch.randn(32, 1))
            >>> current = net.weight.item()
            >>> with trainer.averaged_params():  # 0.9 x initial + 0.1 x current
            ...     averaged = net.weight.item()
            >>> averaged != current == net.weight.item()
            True
        """
        if not self._ready:
            raise RuntimeError("the trainer has not taken a step yet: no parameters to average")
        if self.ema_decay is None:
            yield
            return
        current = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for param, average in zip(self.params, self.ema_params):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, value in zip(self.params, current):
                    param.copy_(value)

    # --- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs: parameters, optimizers, pool, counters, RNG state."""
        if not self._ready:
            raise RuntimeError("the trainer has not taken a step yet: nothing to save")
        return {
            "format": CHECKPOINT_FORMAT,
            "num_steps": self.num_steps,
            "params": [p.detach().clone() for p in self.params],
            "ema_params": [p.clone() for p in self.ema_params],
            "optimizer_type": type(self.ebm_optimizer).__name__,
            "ebm_optimizer": self.ebm_optimizer.state_dict(),
            "flow": self.flow.state_dict(),
            "flow_optimizer": self.flow_optimizer.state_dict(),
            "pool": self.pool.clone(),
            "step_size": self.current_step_size,
            "failures": self._failures,
            "history": self.history,
            "rng": pyro.util.get_rng_state(),
        }

    def load_state_dict(self, state: dict, *args, **kwargs) -> None:
        """Restore :meth:`state_dict`'s output; ``args`` are the model's (the data), for the set-up."""
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not an ebmppl Pyro training checkpoint")
        if not self._ready:
            self._setup(args, kwargs, fit_backbone=False)
        if len(state["params"]) != len(self.params) or any(
            a.shape != b.shape for a, b in zip(state["params"], self.params)
        ):
            raise ValueError("the checkpoint holds parameters of another model than this trainer's")
        if state["optimizer_type"] != type(self.ebm_optimizer).__name__:
            raise ValueError(
                f"the checkpoint does not fit this trainer: it was written with {state['optimizer_type']}, "
                f"this trainer uses {type(self.ebm_optimizer).__name__}"
            )
        try:
            with torch.no_grad():
                for param, value in zip(self.params, state["params"]):
                    param.copy_(value)
                for average, value in zip(self.ema_params, state["ema_params"]):
                    average.copy_(value)
            self.ebm_optimizer.load_state_dict(state["ebm_optimizer"])
            self.flow.load_state_dict(state["flow"])
            self.flow_optimizer.load_state_dict(state["flow_optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"the checkpoint does not fit this trainer (another flow or optimizer?): {err}") from err
        self.pool = state["pool"].clone()
        self.num_steps, self.current_step_size = state["num_steps"], state["step_size"]
        self._failures, self.history = state["failures"], state["history"]
        pyro.util.set_rng_state(state["rng"])

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike, *args, **kwargs) -> None:
        """Resume from a file written by :meth:`save`; ``args`` are the model's (the data).

        The file is unpickled: load only checkpoints you trust.

        Raises:
            FileNotFoundError: no such file.
            ValueError: a truncated or foreign file, or a state of another model,
                flow or optimizer.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        try:
            state = torch.load(path, weights_only=False)
        except Exception as err:  # truncated zip, pickle errors...
            raise ValueError(f"checkpoint {str(path)!r} is truncated or not an ebmppl checkpoint ({err})") from err
        self.load_state_dict(state, *args, **kwargs)


def _base_fn(fn):
    """The site's Potential without the plate's expansion (or masks): one point's density."""
    while not isinstance(fn, Potential) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    if not isinstance(fn, Potential):
        return fn
    return Potential(fn.energy, event_shape=tuple(fn.event_shape), base=fn.base, support=fn.support)
