"""``NeuTraHMC``: Pyro's ``MCMCKernel`` interface over :mod:`ebmppl.pyro.kernels.neutra_core`."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import init_to_uniform

from ebmppl.options import NeuTraOptions
from ebmppl.pyro.adaptation import neutra as warmup
from ebmppl.pyro.flows import identity_whitening, neutra_flow
from ebmppl.pyro.kernels import neutra_core as core
from ebmppl.pyro.kernels.setup import WalkerKernel, build_flow, check_initial_energy
from ebmppl.pyro.moves import Transport
from ebmppl.pyro.potential import Potential
from ebmppl.schedule import WarmupSchedule

__all__ = ["NeuTraHMC"]

_SAMPLE_STATS = ("accept_prob", "potential_energy", "diverging", "step_size", "num_steps")


class NeuTraHMC(WalkerKernel):
    """Neural-transport HMC: HMC in the latent space of a flow fitted to the target during warm-up.

    Pyro has no vectorized chains, so this kernel advances ``num_walkers``
    walkers together inside one Pyro chain, as :class:`FlowMCMC` does
    (``kernel.sample_stats`` holds per-draw ``accept_prob``,
    ``potential_energy``, ``diverging``, ``step_size`` and ``num_steps``). They
    share one transport ``x = T(z)`` (a standardisation composed with a
    normalizing flow) and move by HMC on the latent density
    ``π(T(z)) |det J_T(z)|``, which is nearly a standard normal once the flow
    fits, so that the hard geometry of the target (funnels, curved ridges)
    becomes easy. During warm-up the transport is fitted at the iterations
    of the :class:`~ebmppl.schedule.WarmupSchedule`: by reverse KL to the target
    (default; it reaches regions the chains have not visited yet, such as the
    neck of a funnel) or, with ``fit="forward"``, by forward KL on the recent
    states of every walker; the step size and trajectory length are adapted
    in the latent space. After warm-up the transport is frozen, so the draws
    come from one fixed Markov kernel, reported in the model's constrained
    space. Randomness comes from torch's generator (``pyro.set_rng_seed``).

    A model whose only latent site is a flow-backbone
    ``Potential(energy, base=flow)`` is sampled in that flow's own latent
    space, where the potential is ``-log ρ(z) + energy(flow(z))``; the flow is
    then not refitted (unless ``flow`` or ``schedule`` say so).

    NeuTraHMC does not cross between well-separated modes that its flow has
    not placed: for multimodal targets use :class:`FlowMCMC`.

    Args:
        model: a Pyro model (exactly one of ``model``, ``potential_fn``); it is
            evaluated for all walkers at once, like :class:`FlowMCMC`'s.
        potential_fn: potential energy of one walker's unconstrained
            parameters (a dict of tensors), vectorized with ``torch.func.vmap``;
            then ``initial_params`` must be given to ``MCMC``.
        num_walkers: walkers moved together; ``None`` for the leading size of
            ``initial_params`` if given, else 40.
        flow: the transport's flow: ``None`` for
            :func:`~ebmppl.pyro.flows.neutra_flow` (an inverse autoregressive
            affine flow), a factory ``dim -> flow``, or a flow with an exact
            inverse (used from the first iteration and warm-started by the fits).
        fit: ``"reverse"`` or ``"forward"`` KL.
        step_size: initial leapfrog step size.
        trajectory_length: HMC trajectory length in the latent space; ``None``
            adapts it to a quarter period of the widest latent direction.
        max_leapfrog: cap on the leapfrog steps of one trajectory.
        target_accept_prob: acceptance that step-size adaptation aims at.
        schedule: the :class:`~ebmppl.schedule.WarmupSchedule`; ``None`` for
            ``NeuTraHMC.default_schedule(warmup_steps)``.
        init_strategy: Pyro init strategy when ``model`` is given.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from ebmppl.pyro import NeuTraHMC
        >>> def model():
        ...     v = pyro.sample("v", dist.Normal(0.0, 3.0))
        ...     pyro.sample("x", dist.Normal(0.0, (v / 2).exp().unsqueeze(-1)).expand(v.shape + (3,)).to_event(1))
        >>> pyro.set_rng_seed(0)
        >>> kernel = NeuTraHMC(model, num_walkers=4, schedule=NeuTraHMC.default_schedule(200).replace(fit_steps=50))
        >>> mcmc = MCMC(kernel, warmup_steps=200, num_samples=100, disable_progbar=True)
        >>> mcmc.run()
        >>> mcmc.get_samples(group_by_chain=True)["x"].shape  # (walkers, draws, 3)
        torch.Size([4, 100, 3])
        >>> NeuTraHMC(model, num_walkers=4)  # its settings at a glance (a table in a notebook)
        NeuTraHMC(model=model, flow=default, num_walkers=4, fit='reverse', step_size=0.1,
                  trajectory_length=adapted, max_leapfrog=256, target_accept_prob=0.8, schedule=default)
    """

    def __init__(
        self,
        model: Callable | None = None,
        *,
        potential_fn: Callable | None = None,
        num_walkers: int | None = None,
        flow: Any = None,
        fit: str = "reverse",
        step_size: float = 0.1,
        trajectory_length: float | None = None,
        max_leapfrog: int = 256,
        target_accept_prob: float = 0.8,
        schedule: WarmupSchedule | None = None,
        init_strategy: Callable = init_to_uniform,
    ):
        super().__init__("NeuTraHMC", model, potential_fn, num_walkers, flow, init_strategy)
        self._options = NeuTraOptions(
            fit=fit, step_size=step_size, trajectory_length=trajectory_length, max_leapfrog=max_leapfrog,
            target_accept_prob=target_accept_prob, schedule=schedule,
        ).validate()

    @staticmethod
    def default_schedule(num_warmup: int) -> WarmupSchedule:
        """:meth:`WarmupSchedule.neutra`: up to four fits, each stopped when its loss stops improving."""
        return WarmupSchedule.neutra(num_warmup)

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        target, layout, position = self._walkers(args, kwargs)
        dim = position.shape[1]
        options = self._options
        backbone = self._backbone(dim, args, kwargs) if self._flow is None else None
        flow = self._flow if backbone is None else backbone
        schedule = self._schedule = options.schedule_for(warmup_steps, backbone=backbone is not None)
        flow, factory, _ = build_flow(flow, neutra_flow, dim, position.device, position.dtype)
        self._settings = warmup.Settings(warmup_steps, options.target_accept_prob, schedule, options.fit,
                                         options.max_leapfrog, options.trajectory_length is None, factory)
        check_initial_energy("NeuTraHMC", target.logdensity(position))
        length = 0.5 * math.pi if options.trajectory_length is None else options.trajectory_length
        transport = Transport(flow, identity_whitening(dim, position.dtype, position.device))
        state = core.init(position, target, transport, options.step_size, length)
        check_initial_energy("NeuTraHMC", state.walkers.logdensity)
        restarts = schedule.fresh_restarts if factory is not None else 0
        self._adapt = warmup.init(position, schedule, options.step_size, restarts) if warmup_steps else None
        self._target, self._layout, self._state = target, layout, state
        zeros = position.new_zeros(position.shape[0])
        self._info = core.CoreInfo(zeros, torch.zeros_like(zeros, dtype=torch.bool), 0, self._num_nonfinite)
        self._initial_params = layout.unflatten(position)
        self._runs.append({name: [] for name in _SAMPLE_STATS})

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        settings, adapt = self._settings, self._adapt
        cap = settings.max_leapfrog if adapt is None else warmup.leapfrog_cap(adapt, settings)
        state, info = core.step(self._state, self._target, cap)
        if adapt is not None:  # warm-up: composed with the step until it ends, then dropped
            state, adapt = warmup.update(adapt, state, info, self._target, settings)
            self._adapt = self._count(info, adapt, settings.num_warmup)
        else:
            self._count(info, None, settings.num_warmup)
            record = self._runs[-1]
            step_size = torch.full_like(info.accept_prob, float(state.step_size))
            record["accept_prob"].append(info.accept_prob)
            record["potential_energy"].append(-state.logdensity)
            record["diverging"].append(info.diverging)
            record["step_size"].append(step_size)
            record["num_steps"].append(torch.full_like(step_size, info.num_steps))
        self._state, self._info = state, info
        return self._layout.unflatten(state.position)

    def _flow_of(self, state: core.CoreState):
        transport = state.transport  # the latent walkers are standard normal: the flow is the proposal
        return transport.flow, transport.whitening, True

    def logging(self) -> OrderedDict:
        info = self._info
        return OrderedDict(
            [
                ("acc", f"{float(info.accept_prob.mean()):.2f}"),
                ("steps", str(info.num_steps)),
                ("step", f"{float(self._state.step_size):.2e}"),
            ]
        )

    def diagnostics(self) -> dict:
        stats = self.sample_stats[-1]
        return {
            "acceptance rate": stats["accept_prob"].mean().item(),
            # Pyro's convention (MCMC.summary counts them): the draws where a walker diverged
            "divergences": torch.nonzero(stats["diverging"].any(0)).flatten().tolist(),
            "num nonfinite": int(self._num_nonfinite.sum()),
        }


    def _backbone(self, dim, args, kwargs):
        """The flow of the model's only latent site when it is a flow-backbone Potential."""
        if self.model is None:
            return None
        with poutine.block(), pyro.poutine.trace() as tracer:
            self.model(*args, **kwargs)
        latent = [
            site for site in tracer.trace.nodes.values()
            if site["type"] == "sample" and not site["is_observed"]
        ]
        if len(latent) != 1 or not isinstance(latent[0]["fn"], Potential):
            return None
        flow = latent[0]["fn"].backbone
        if flow is None or tuple(flow().event_shape) != (dim,):
            return None
        return flow
