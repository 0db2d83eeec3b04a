"""``EBMTrainer``: maximum-likelihood training of an energy with flow-assisted negatives (Pyro).

The model declares what is trained: a :class:`~ebmppl.pyro.Potential` at an
observed site, in a plate over the data, whose energy is a
``torch.nn.Module`` registered with ``pyro.module``. The trainer finds that
site, the energy's parameters and the data by tracing the model, as SVI does.

One update: draw a data batch ``x+``; draw ``batch_size`` negatives ``x-``
with the method's function of :mod:`~ebmppl.pyro.training.negatives`
(``"flow"``: the pool's chains moved by rounds of an i-SIR move proposed by
the flow and MALA moves; ``"ula"``, ``"short-run"``: MALA only, from the pool
or from noise; ``"neutra"``: MALA in the latent space of a flow fitted to
the data by maximum likelihood in :meth:`EBMTrainer.init` and then frozen
as the model's backbone, ``p(x) ∝ exp(-E(x)) q(x)``); the negatives go back
to the pool; step the energy's parameters along
``mean ∇E(x+) - mean ∇E(x-)`` and, with ``"flow"``, the flow's along
``mean ∇ log λ(x-)`` (forward KL on the negatives).

The API is the NumPyro trainer's without keys: randomness comes from Pyro's
seeded RNG (``pyro.set_rng_seed``); the state records the RNG state, and an
update starts from it. Building the trainer (tracing the model, the flow
module, the torch optimizers) happens once, on the first call that has the
model's arguments; making a state is :meth:`EBMTrainer.init`'s alone, so
:meth:`EBMTrainer.load` never fits anything.

The class's example goes through the whole API.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from typing import Any, Callable, NamedTuple

import numpy as np
import pyro
import torch
from pyro import poutine
from torch.overrides import TorchFunctionMode

from ebmppl._repr import html_table, kernel_rows, text
from ebmppl.options import TrainerOptions
from ebmppl.pyro.flows import as_flow_module, check_flow, default_flow, fit_flow
from ebmppl.pyro.potential import Potential
from ebmppl.pyro.training.checkpoint import load_checkpoint, save_checkpoint
from ebmppl.pyro.training.negatives import NEGATIVES, Chains, Target
from ebmppl.pyro.training.state import TrainResult, TrainState

__all__ = ["EBMTrainer"]

# the statistics every update reports and run records (mode_weights too, with mode centres)
_HISTORY = ("loss", "energy_data", "energy_negatives", "global_accept_prob", "local_accept_prob")


class _Traced(NamedTuple):
    """What tracing the model with its arguments gives."""

    args: tuple
    kwargs: dict
    potential: Potential  # the site's Potential, one point's density, with the live parameters
    params: dict  # {name: the param store's live unconstrained tensor}
    data: torch.Tensor  # (n, D)


class _Workspace(NamedTuple):
    """The modules and optimizers that updates step, made once per trainer."""

    flow: torch.nn.Module
    flow_trainable: list  # the flow's parameters that its optimizer steps
    ebm_optimizer: torch.optim.Optimizer
    flow_optimizer: torch.optim.Optimizer
    initial: TrainState  # parameters and optimizer states as built (pool and RNG state None)


class EBMTrainer:
    """Joint training of a ``Potential``'s energy and a flow, reading like Pyro's SVI.

    The API is the NumPyro ``EBMTrainer``'s, less the keys: ``init`` and
    ``run`` take no key; seed Pyro's RNG (``pyro.set_rng_seed``) before
    ``init``. A :class:`~ebmppl.pyro.training.TrainState` holds copies of
    everything an update needs; the energy's module, Pyro's parameter store,
    the flow module and the torch optimizers are the trainer's workspace and
    hold the state that the trainer last made, loaded or updated.

    Args:
        model: a Pyro model with one observed ``Potential`` site in a plate over
            the data; its parameters (``pyro.module`` / ``pyro.param``) are trained.
        flow: the proposal: ``None`` for :func:`~ebmppl.pyro.flows.default_flow`,
            a factory ``dim -> flow``, or a flow with an exact inverse.
        optim: a Pyro optimizer (``pyro.optim.Adam({...})``...); the energy and
            the flow each get a torch optimizer of its kind and arguments.
        method: ``"flow"``, ``"ula"``, ``"short-run"`` or ``"neutra"`` (see
            :mod:`~ebmppl.pyro.training.negatives`). With ``"neutra"`` the
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
        mode_centres: optional ``(K, D)`` centres; the history then records the
            weights of the negatives' modes (nearest centre).
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
    :class:`~ebmppl.pyro.training.TrainResult` prints the run's method, steps,
    parameter count and last statistics.

    Example:
        >>> import torch, pyro, pyro.distributions as dist, tempfile
        >>> from ebmppl.pyro import EBMTrainer, Potential
        >>> pyro.set_rng_seed(0); pyro.clear_param_store()
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))
        >>> base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)  # keeps exp(-E) normalizable
        >>> def model(x):
        ...     energy = pyro.module("energy", net)
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("x", Potential(lambda y: energy(y).squeeze(-1), event_shape=(2,), base=base), obs=x)
        >>> data = torch.randn(512, 2)
        >>> options = dict(optim=pyro.optim.Adam({"lr": 1e-3}), batch_size=64, pool_size=256, num_rounds=1,
        ...                num_local_steps=5, num_particles=8, ema_decay=0.9)
        >>> trainer = EBMTrainer(model, **options)
        >>> state = trainer.init(data)  # no key: Pyro's RNG, seeded above
        >>> state, stats = trainer.update(state, data)
        >>> path = tempfile.mkdtemp() + "/state.pt"
        >>> trainer.save(path, state)
        >>> resumed = EBMTrainer(model, **options).load(path, data)  # e.g. in a new process
        >>> result = trainer.run(5, data, init_state=resumed, progress_bar=False)
        >>> result.state.step, result.history["loss"].shape, trainer.options.num_local_steps
        (6, (5,), 5)
        >>> trainer.potential(result.params, data).log_prob(data[:3]).shape  # the trained density
        torch.Size([3])
        >>> trainer.flow(result.state)().sample((7,)).shape  # a sampler of it
        torch.Size([7, 2])
        >>> loss = trainer.step(data)  # SVI-style: one update of the trainer's latest state
        >>> with trainer.averaged_params():  # the network holds the moving averages within the block
        ...     averaged = net[0].weight.detach().clone()
        >>> bool((averaged != net[0].weight).any())
        True
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
        self.options = TrainerOptions(
            method=method, batch_size=batch_size, pool_size=pool_size, num_rounds=num_rounds,
            num_local_steps=num_local_steps, num_particles=num_particles, step_size=step_size,
            target_accept_prob=target_accept_prob, energy_penalty=energy_penalty, max_grad_norm=max_grad_norm,
            max_failures=max_failures, ema_decay=ema_decay, flow_fit_steps=flow_fit_steps,
            flow_learning_rate=flow_learning_rate,
        ).validate()
        self.model, self.optim = model, optim
        self.mode_centres = None if mode_centres is None else torch.as_tensor(mode_centres, dtype=torch.float32)
        self._flow_arg = flow
        self._negatives = NEGATIVES[self.options.method]
        self._trains_flow = self.options.method == "flow"  # the others leave the flow as it is
        self._backbone = self.options.method == "neutra"  # the flow is fitted in init, then frozen
        self._traced: _Traced | None = None
        self._workspace: _Workspace | None = None
        self._latest: TrainState | None = None  # the state the workspace holds

    # --- how it shows in a notebook ---------------------------------------------------------
    def _rows(self) -> list[tuple[str, str]]:
        return kernel_rows(self.model, None, self._flow_arg, self.options, mode_centres=self.mode_centres)

    def __repr__(self) -> str:
        return text("EBMTrainer", self._rows())

    def _repr_html_(self) -> str:
        return html_table("EBMTrainer", self._rows())

    # --- building ----------------------------------------------------------------------------
    def _trace(self, args, kwargs) -> _Traced:
        with poutine.block():
            trace = poutine.trace(self.model).get_trace(*args, **kwargs)
        sites = [
            site for site in trace.nodes.values()
            if site["type"] == "sample" and site["is_observed"] and isinstance(_base_fn(site["fn"]), Potential)
        ]
        if len(sites) != 1:
            raise ValueError(f"EBMTrainer needs exactly one observed Potential site in the model, found {len(sites)}")
        names = [name for name, node in trace.nodes.items() if node["type"] == "param"]
        params = {name: pyro.param(name).unconstrained() for name in names}
        if not params:
            raise ValueError("the model registers no parameters (pyro.module / pyro.param) to train")
        potential = _base_fn(sites[0]["fn"])
        return _Traced(args, kwargs, potential, params, _flat_data(sites[0]["value"], potential.event_shape))

    def _build(self, args, kwargs) -> tuple[_Traced, _Workspace]:
        """Trace the model for these arguments (unless done) and make the workspace (once)."""
        traced = self._traced
        if traced is None or not _same_arguments((traced.args, traced.kwargs), (args, kwargs)):
            traced = self._trace(args, kwargs)
        self._traced = traced._replace(args=args, kwargs=kwargs)
        if self._workspace is None:
            self._workspace = self._new_workspace(traced)
        return self._traced, self._workspace

    def _new_workspace(self, traced: _Traced) -> _Workspace:
        dim = traced.data.shape[-1]
        if self._flow_arg is None or (callable(self._flow_arg) and not isinstance(self._flow_arg, torch.nn.Module)):
            factory = default_flow if self._flow_arg is None else self._flow_arg
            flow = as_flow_module(factory(dim))
        else:
            flow = as_flow_module(self._flow_arg)
        flow = flow.to(traced.data.device, traced.data.dtype)
        check_flow(flow, dim)
        trainable = [p for p in flow.parameters() if p.requires_grad]
        ebm_optimizer = self._make_optimizer(list(traced.params.values()))
        flow_optimizer = self._make_optimizer(trainable)
        params = _copies(traced.params)
        initial = TrainState(0, params, params, copy.deepcopy(ebm_optimizer.state_dict()), _copies(flow.state_dict()),
                             copy.deepcopy(flow_optimizer.state_dict()), None, self.options.step_size, 0, None)
        return _Workspace(flow, trainable, ebm_optimizer, flow_optimizer, initial)

    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        args = self.optim.pt_optim_args
        args = args(None, None) if callable(args) else args
        return self.optim.pt_optim_constructor(params, **args)

    # --- states ------------------------------------------------------------------------------
    def init(self, *args, **kwargs) -> TrainState:
        """The state before the first update: energy as first built, flow fresh, pool from the flow.

        Draws from Pyro's RNG (seed it with ``pyro.set_rng_seed``). With
        ``method="neutra"`` the flow is first fitted to the data (the
        backbone, frozen afterwards): the only place where a fit happens.

        Args:
            *args: the model's arguments (the data).
            **kwargs: the model's keyword arguments.
        """
        traced, work = self._build(args, kwargs)
        self._restore(work.initial, traced, work)
        self._latest = None  # until the state is made
        if self._backbone:  # maximum likelihood on the data, then frozen
            for param in work.flow_trainable:
                param.requires_grad_(True)
            fit_flow([work.flow], traced.data, num_steps=self.options.flow_fit_steps,
                     batch_size=self.options.batch_size, learning_rate=self.options.flow_learning_rate)
            work.flow.requires_grad_(False)
        with torch.no_grad():
            pool = work.flow().sample((self.options.pool_size,))
        params = _copies(traced.params)
        self._latest = TrainState(
            step=0, ebm_params=params, ema_params=params,
            ebm_opt_state=copy.deepcopy(work.ebm_optimizer.state_dict()), flow_params=_copies(work.flow.state_dict()),
            flow_opt_state=copy.deepcopy(work.flow_optimizer.state_dict()), pool=pool,
            step_size=self.options.step_size, failures=0, rng_state=pyro.util.get_rng_state(),
        )
        return self._latest

    def update(self, state: TrainState, *args, **kwargs) -> tuple[TrainState, dict]:
        """One update from ``state``; returns the new state and its statistics (``run``'s history and ``finite``).

        The update starts from ``state``'s RNG state and leaves Pyro's RNG
        where it ended. A non-finite loss or gradient leaves the parameters
        unchanged, with a warning, and counts in ``state.failures``;
        ``max_failures`` in a row raise a ``FloatingPointError``.
        """
        traced, work = self._build(args, kwargs)
        if state is not self._latest:
            self._restore(state, traced, work)
        pyro.util.set_rng_state(state.rng_state)
        data, options = traced.data, self.options
        batch = data[torch.randint(0, data.shape[0], (options.batch_size,), device=data.device)]
        index = torch.randperm(options.pool_size, device=state.pool.device)[: options.batch_size]
        target = Target(traced.potential.log_prob, traced.potential.energy, work.flow)
        drawn = self._negatives(Chains(state.pool[index], state.step_size), target, options)
        loss, e_data, e_neg, finite = self._backward(batch, drawn.position, traced, work)
        stats = {
            "loss": loss.item(), "energy_data": e_data.mean().item(), "energy_negatives": e_neg.mean().item(),
            "global_accept_prob": drawn.global_accept_prob, "local_accept_prob": drawn.local_accept_prob,
            "finite": finite,
        }
        if self.mode_centres is not None:
            stats["mode_weights"] = _mode_weights(drawn.position, self.mode_centres)
        self._latest = self._stepped(state, index, drawn, traced, work) if finite else self._skipped(state, drawn)
        return self._latest, stats

    def _backward(self, batch, negatives, traced: _Traced, work: _Workspace):
        """The loss and its gradients (in the parameters' ``.grad``); whether all are finite."""
        energy = traced.potential.energy
        e_data, e_neg = energy(batch), energy(negatives)
        loss = e_data.mean() - e_neg.mean()
        if self.options.energy_penalty:
            loss = loss + self.options.energy_penalty * ((e_data**2).mean() + (e_neg**2).mean())
        work.ebm_optimizer.zero_grad()
        loss.backward()
        ebm_norm = torch.nn.utils.clip_grad_norm_(list(traced.params.values()), self.options.max_grad_norm)
        flow_norm = torch.zeros(())
        if self._trains_flow:
            work.flow_optimizer.zero_grad()
            flow_loss = -work.flow().log_prob(negatives).mean()
            flow_loss.backward()
            flow_norm = torch.nn.utils.clip_grad_norm_(work.flow_trainable, self.options.max_grad_norm)
        finite = bool(torch.isfinite(loss) & torch.isfinite(ebm_norm) & torch.isfinite(flow_norm))
        return loss, e_data, e_neg, finite and bool(torch.isfinite(negatives).all())

    def _stepped(self, state: TrainState, index, drawn, traced: _Traced, work: _Workspace) -> TrainState:
        """The optimizers' steps and the new state, copied out of the workspace."""
        work.ebm_optimizer.step()
        ebm_params = _copies(traced.params)
        decay = self.options.ema_decay
        ema_params = ebm_params if decay is None else {
            name: torch.lerp(average, ebm_params[name], 1.0 - decay) for name, average in state.ema_params.items()
        }
        flow_params, flow_opt_state = state.flow_params, state.flow_opt_state
        if self._trains_flow:
            work.flow_optimizer.step()
            flow_params = _copies(work.flow.state_dict())
            flow_opt_state = copy.deepcopy(work.flow_optimizer.state_dict())
        pool = state.pool.clone()
        pool[index] = drawn.position
        return TrainState(
            step=state.step + 1, ebm_params=ebm_params, ema_params=ema_params,
            ebm_opt_state=copy.deepcopy(work.ebm_optimizer.state_dict()), flow_params=flow_params,
            flow_opt_state=flow_opt_state, pool=pool, step_size=drawn.step_size, failures=0,
            rng_state=pyro.util.get_rng_state(),
        )

    def _skipped(self, state: TrainState, drawn) -> TrainState:
        """The state after a non-finite update: parameters and pool unchanged, one more failure."""
        failures = state.failures + 1
        warnings.warn(f"EBMTrainer: non-finite loss or gradient at step {state.step}; update skipped")
        if failures >= self.options.max_failures:
            raise FloatingPointError(
                f"EBMTrainer: {failures} updates in a row had a non-finite loss or gradient "
                f"(the last at step {state.step}); the energy is NaN or infinite on the data or the negatives"
            )
        return state._replace(step=state.step + 1, step_size=drawn.step_size, failures=failures,
                              rng_state=pyro.util.get_rng_state())

    def _restore(self, state: TrainState, traced: _Traced, work: _Workspace) -> None:
        """Copy ``state``'s parameters and optimizer states into the workspace."""
        self._latest = None
        try:
            with torch.no_grad():
                for name, param in traced.params.items():
                    param.copy_(state.ebm_params[name])
            work.flow.load_state_dict(state.flow_params)
            work.ebm_optimizer.load_state_dict(copy.deepcopy(state.ebm_opt_state))
            work.flow_optimizer.load_state_dict(copy.deepcopy(state.flow_opt_state))
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"the state does not fit this trainer (another model, flow or optimizer?): {err}") from err
        self._latest = state

    def step(self, *args, **kwargs) -> float:
        """One update of the trainer's own state, SVI-style; returns the loss.

        The first call makes the state (:meth:`init`); every call then
        updates the state that the trainer last made, loaded or updated
        (its parameters are those in the modules).
        """
        state = self.init(*args, **kwargs) if self._latest is None else self._latest
        return self.update(state, *args, **kwargs)[1]["loss"]

    def run(
        self,
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
            num_steps: updates to make.
            *args: the model's arguments (the data).
            **kwargs: the model's keyword arguments.
            progress_bar: show loss, energy gap and global acceptance.
            init_state: resume from this state (e.g. :meth:`load`'s).
            checkpoint: a file to which the state is written (:meth:`save`)
                every ``checkpoint_every`` updates and at the end.
            checkpoint_every: updates between checkpoints.

        Returns:
            A :class:`~ebmppl.pyro.training.TrainResult`.
        """
        state = self.init(*args, **kwargs) if init_state is None else init_state
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
                    loss=f"{stats['loss']:.3f}",
                    gap=f"{stats['energy_data'] - stats['energy_negatives']:.3f}",
                    global_acc=f"{stats['global_accept_prob']:.2f}",
                )
        history = {name: np.stack(values) if values else np.zeros(0) for name, values in records.items()}
        params = state.ema_params if self.options.ema_decay is not None else state.ebm_params
        return TrainResult(state, params, history, method=self.options.method)

    # --- what the state stands for -------------------------------------------------------------
    def potential(self, params: dict, *args, **kwargs) -> Potential:
        """The model's ``Potential`` (one point's density) with the energy's parameters ``params``.

        The energy is the model's network evaluated with ``params`` in place
        of its parameters (the modules are not changed; gradients flow to
        the points only). With ``method="neutra"`` it is the flow-backbone
        ``Potential(energy, base=flow)``, the flow of the state last made,
        loaded or updated.

        Args:
            params: ``{name: tensor}``, e.g. ``result.params`` or ``state.ema_params``.
            *args: the model's arguments (the data).
            **kwargs: the model's keyword arguments.
        """
        traced, _ = self._build(args, kwargs)
        if set(params) != set(traced.params):
            raise ValueError(f"params must hold the energy's parameters {sorted(traced.params)}, got {sorted(params)}")
        energy = _substituted(traced.potential.energy, {id(traced.params[name]): params[name] for name in params})
        site = traced.potential
        if not self._backbone:
            return Potential(energy, event_shape=tuple(site.event_shape), base=site.base, support=site.support)
        if self._latest is None:
            raise RuntimeError("method='neutra': the backbone flow comes from init, load or update; call one first")
        return Potential(energy, event_shape=tuple(site.event_shape), base=self.flow(self._latest))

    def flow(self, state: TrainState) -> torch.nn.Module:
        """The flow (a module; its call returns the distribution) with ``state``'s parameters: a sampler of the model.

        A frozen copy: later updates do not change it.
        """
        if self._workspace is None:
            raise RuntimeError("the trainer has no flow yet: call init, load or update first")
        flow = copy.deepcopy(self._workspace.flow)
        flow.load_state_dict(state.flow_params)
        return flow.requires_grad_(False)

    @contextlib.contextmanager
    def averaged_params(self, state: TrainState | None = None):
        """Within this block the model's modules hold ``state``'s moving averages (``ema_decay``).

        For code that uses the energy's network directly; :meth:`potential`
        with ``state.ema_params`` needs no block. ``state`` defaults to the one
        the trainer last made, loaded or updated; the modules' values come back
        on exit. Without ``ema_decay`` the averages are the iterates.
        """
        state = self._latest if state is None else state
        if state is None or self._traced is None:
            raise RuntimeError("the trainer has no state yet: call init, load or update first")
        live = self._traced.params
        current = _copies(live)
        with torch.no_grad():
            for name, param in live.items():
                param.copy_(state.ema_params[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in live.items():
                    param.copy_(current[name])

    # --- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, state: TrainState) -> None:
        """Write ``state`` to ``path`` atomically (:func:`~ebmppl.pyro.training.save_checkpoint`).
        """
        save_checkpoint(path, state)

    def load(self, path: str | os.PathLike, *args, **kwargs) -> TrainState:
        """The state in a file written by :meth:`save`; ``args`` are the model's (the data).

        Builds the trainer if needed (trace, flow module, optimizers), checks
        the file against it and copies the state into the modules; nothing
        is fitted, so a ``"neutra"`` backbone is read, not refitted. Resume
        with ``run(n, *args, init_state=state)``, :meth:`update` or
        :meth:`step`. The file is unpickled: load only checkpoints you trust.

        Raises:
            FileNotFoundError: no such file.
            ValueError: a truncated or foreign file, or a state of another
                model, flow or optimizer.
        """
        traced, work = self._build(args, kwargs)
        pool = torch.empty(self.options.pool_size, traced.data.shape[-1])
        like = work.initial._replace(pool=pool)
        state = load_checkpoint(path, like)
        self._restore(state, traced, work)
        return state


class _Substitution(TorchFunctionMode):
    """Within it, torch functions see ``mapping[id(t)]`` wherever they get the tensor ``t``."""

    def __init__(self, mapping: dict):
        super().__init__()
        self.mapping = mapping

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*self._swap(args), **self._swap(kwargs or {}))

    def _swap(self, value):
        if isinstance(value, torch.Tensor):
            return self.mapping.get(id(value), value)
        if isinstance(value, (list, tuple)):
            return type(value)(self._swap(item) for item in value)
        if isinstance(value, dict):
            return {key: self._swap(item) for key, item in value.items()}
        return value


def _substituted(energy: Callable, mapping: dict) -> Callable:
    """``energy`` evaluated with other values in place of the parameters (by the ids of the live tensors)."""

    def substituted(x):
        with _Substitution(mapping):
            return energy(x)

    return substituted


def _copies(tensors: dict) -> dict:
    return {name: value.detach().clone() for name, value in tensors.items()}


def _mode_weights(negatives: torch.Tensor, centres: torch.Tensor) -> list:
    """Fractions of the negatives nearest each centre."""
    nearest = torch.cdist(negatives, centres.to(negatives)).argmin(-1)
    return (torch.bincount(nearest, minlength=len(centres)) / len(nearest)).tolist()


def _progress(num_steps: int, progress_bar: bool):
    if not progress_bar:
        return range(num_steps)
    from tqdm.auto import tqdm

    return tqdm(range(num_steps), desc="EBMTrainer")


def _base_fn(fn):
    """The site's Potential without the plate's expansion (or masks): one point's density."""
    while not isinstance(fn, Potential) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    if not isinstance(fn, Potential):
        return fn
    return Potential(fn.energy, event_shape=tuple(fn.event_shape), base=fn.base, support=fn.support)


def _flat_data(value: torch.Tensor, event_shape) -> torch.Tensor:
    """The observed values as ``(n, D)`` points, refused with NaN or infinite rows."""
    if len(event_shape) != 1:
        raise ValueError(f"EBMTrainer trains on flat points (event_shape (D,)), got {tuple(event_shape)}")
    data = value.detach().reshape((-1,) + tuple(event_shape))
    bad = torch.nonzero(~torch.isfinite(data).all(-1)).flatten()
    if bad.numel():
        raise ValueError(f"the data have {bad.numel()} rows with NaN or infinite values (rows {bad[:5].tolist()})")
    return data


def _same_arguments(old, new) -> bool:
    """Whether the model's arguments are the ones the trainer was traced with: the same objects or equal values."""
    (old_args, old_kwargs), (new_args, new_kwargs) = old, new
    if len(old_args) != len(new_args) or set(old_kwargs) != set(new_kwargs):
        return False
    pairs = list(zip(old_args, new_args)) + [(old_kwargs[k], new_kwargs[k]) for k in old_kwargs]
    return all(a is b or _equal(a, b) for a, b in pairs)


def _equal(a, b) -> bool:
    if torch.is_tensor(a) and torch.is_tensor(b):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable objects are different arguments
        return False
