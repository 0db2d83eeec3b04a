"""``NeuTraHMC``: NumPyro's ``MCMCKernel`` interface over :mod:`ebmppl.numpyro.kernels.neutra_core`."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import constrain_fn

from ebmppl.numpyro.adaptation import neutra as warmup
from ebmppl.numpyro.flows import identity_whitening, neutra_flow, partition_flow
from ebmppl.numpyro.kernels import neutra_core as core
from ebmppl.numpyro.kernels.setup import (
    EnsembleKernel,
    RunParts,
    build_flow,
    check_initial_energy,
    warn_at_end_of_warmup,
)
from ebmppl.numpyro.keys import typed_key
from ebmppl.numpyro.moves import Transport
from ebmppl.numpyro.potential import Potential
from ebmppl.options import NeuTraOptions
from ebmppl.schedule import WarmupSchedule

__all__ = ["NeuTraHMC", "NeuTraHMCState"]


class NeuTraHMCState(NamedTuple):
    """What NumPyro's ``MCMC`` carries between iterations (leading axis: chains).

    Attributes:
        z: the walkers in the model's unconstrained space, as its pytree.
        potential_energy: shape ``(C,)``, ``-log density`` at ``z``.
        accept_prob: shape ``(C,)``, acceptance probability of the HMC move.
        diverging: shape ``(C,)``, whether the trajectory diverged.
        step_size: shape ``(C,)``, the latent leapfrog step size.
        num_steps: shape ``(C,)``, leapfrog steps of the trajectory.
        num_nonfinite: shape ``(C,)``, running count of rejected proposals
            with a non-finite energy.
        core: the :class:`~ebmppl.numpyro.kernels.neutra_core.CoreState` (walkers, step size,
            trajectory length, transport).
        adapt: the warm-up's :class:`~ebmppl.numpyro.adaptation.neutra.AdaptState`;
            ``None`` in a run without warm-up (see :meth:`NeuTraHMC.without_adaptation`).
        rng_key: one JAX key shared by the ensemble.
    """

    z: Any
    potential_energy: jax.Array
    accept_prob: jax.Array
    diverging: jax.Array
    step_size: jax.Array
    num_steps: jax.Array
    num_nonfinite: jax.Array
    core: core.CoreState
    adapt: warmup.AdaptState | None
    rng_key: jax.Array


class NeuTraHMC(EnsembleKernel):
    """Neural-transport HMC: HMC in the latent space of a flow fitted to the chains.

    An ensemble kernel: all chains share one transport ``x = T(z)`` (a
    whitening composed with a normalizing flow) and move by HMC on the latent
    density ``π(T(z)) |det J_T(z)|``, which is nearly a standard normal once
    the flow fits, so that the hard geometry of the target (funnels, curved
    ridges) becomes easy. During warm-up the transport is fitted at the
    iterations of the :class:`WarmupSchedule`: by reverse KL to the target
    (default; it reaches regions the chains have not visited yet, such as the
    neck of a funnel) or, with ``fit="forward"``, by forward KL on the recent
    states of every chain; the step size and trajectory length are adapted in
    the latent space. After warm-up the transport is frozen, so the
    draws come from one fixed Markov kernel. Draws are reported in the
    model's constrained space.

    A model whose only latent site is a flow-backbone
    ``Potential(energy, base=flow)`` is sampled in that flow's own latent
    space, where the potential is ``-log ρ(z) + energy(flow(z))`` (``½|z|²`` plus
    the energy, up to a constant, for a standard normal base ``ρ``);
    the flow is then not refitted (unless ``flow`` or ``schedule`` say so).

    NeuTraHMC does not cross between well-separated modes that its flow has
    not placed: for multimodal targets use :class:`FlowMCMC`.

    Run it with ``MCMC(kernel, ..., num_chains=C, chain_method="vectorized")``,
    ``C >= 2``.

    Args:
        model: a NumPyro model (exactly one of ``model``, ``potential_fn``).
        potential_fn: potential energy (negative log density) of one chain's
            unconstrained parameters; then ``init_params`` must be given to
            ``MCMC.run``, with a leading axis of size ``num_chains``.
        flow: the transport's flow: ``None`` for
            :func:`~ebmppl.numpyro.flows.neutra_flow` (an inverse autoregressive affine flow),
            a factory ``(key, dim) -> flow``, or a flowjax distribution of shape
            ``(D,)`` with an exact inverse (used from the first iteration and
            warm-started by the fits).
        fit: ``"reverse"`` or ``"forward"`` KL.
        step_size: initial leapfrog step size.
        trajectory_length: HMC trajectory length in the latent space; ``None``
            adapts it to a quarter period of the widest latent direction.
        max_leapfrog: cap on the leapfrog steps of one trajectory.
        target_accept_prob: acceptance that step-size adaptation aims at.
        schedule: the :class:`WarmupSchedule`; ``None`` for
            ``NeuTraHMC.default_schedule(num_warmup)``.
        init_strategy: NumPyro init strategy when ``model`` is given.

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC
        >>> from ebmppl.numpyro import NeuTraHMC
        >>> def model():
        ...     v = numpyro.sample("v", dist.Normal(0.0, 3.0))
        ...     numpyro.sample("x", dist.Normal(0.0, jax.numpy.exp(v / 2)).expand([3]).to_event(1))
        >>> mcmc = MCMC(NeuTraHMC(model), num_warmup=200, num_samples=100, num_chains=4,
        ...             chain_method="vectorized", progress_bar=False)
        >>> mcmc.run(jax.random.key(0))
        >>> mcmc.get_samples()["x"].shape
        (400, 3)
        >>> NeuTraHMC(model)  # its settings at a glance (a table in a notebook)
        NeuTraHMC(model=model, flow=default, fit='reverse', step_size=0.1, trajectory_length=adapted,
                  max_leapfrog=256, target_accept_prob=0.8, schedule=default)
    """

    def __init__(
        self,
        model: Callable | None = None,
        *,
        potential_fn: Callable | None = None,
        flow: Any = None,
        fit: str = "reverse",
        step_size: float = 0.1,
        trajectory_length: float | None = None,
        max_leapfrog: int = 256,
        target_accept_prob: float = 0.8,
        schedule: WarmupSchedule | None = None,
        init_strategy: Callable = init_to_uniform,
    ):
        super().__init__("NeuTraHMC", model, potential_fn, flow, init_strategy)
        self._options = NeuTraOptions(
            fit=fit, step_size=step_size, trajectory_length=trajectory_length, max_leapfrog=max_leapfrog,
            target_accept_prob=target_accept_prob, schedule=schedule,
        ).validate()

    @staticmethod
    def default_schedule(num_warmup: int) -> WarmupSchedule:
        """:meth:`WarmupSchedule.neutra`: up to four fits, each stopped when its loss stops improving."""
        return WarmupSchedule.neutra(num_warmup)

    # --- what NumPyro's MCMC reads -------------------------------------------------
    @property
    def default_fields(self):
        return ("z", "accept_prob", "potential_energy", "diverging", "step_size", "num_steps")

    def get_diagnostics_str(self, state: NeuTraHMCState) -> str:
        return "acc. {:.2f}, {} steps of size {:.2e}, {} divergences".format(
            float(jnp.mean(state.accept_prob)),
            int(state.num_steps[0]),
            float(state.step_size[0]),
            int(jnp.sum(state.diverging)),
        )

    # --- init / sample ---------------------------------------------------------------
    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs={}):
        walkers = self._walkers(rng_key, init_params, model_args, model_kwargs)
        key, flow_key, logdensity, unravel, position = (
            walkers.key, walkers.flow_key, walkers.logdensity, walkers.unravel, walkers.position
        )
        num_chains, dim = position.shape

        first = jax.tree.map(lambda leaf: leaf[0], walkers.init_params)
        backbone = None
        if self._flow is None:
            backbone = self._backbone(walkers.init_key, first, dim, model_args, model_kwargs)
        flow = self._flow if backbone is None else backbone
        schedule = self._schedule = self._options.schedule_for(num_warmup, backbone=backbone is not None)
        flow, fresh_params, _ = build_flow(flow, neutra_flow, flow_key, dim, schedule)
        params, static = partition_flow(flow)
        state, adapt = self._start(position, logdensity, params, static, fresh_params, schedule, num_warmup)
        self._sample_fn = self._sampler(logdensity, static, schedule, num_warmup, unravel, dim)
        self._run = RunParts(logdensity, unravel, static)
        info = core.CoreInfo(jnp.zeros(num_chains, position.dtype), jnp.zeros(num_chains, bool),
                             jnp.zeros((), jnp.int32), jnp.zeros(num_chains, jnp.int32))
        return _wrap(state, info, adapt, info.num_nonfinite, unravel, key)

    def _start(self, position, logdensity, params, static, fresh_params, schedule, num_warmup):
        """The core's state under the identity standardisation and the warm-up's, checked."""
        options = self._options
        length = 0.5 * math.pi if options.trajectory_length is None else options.trajectory_length

        def start(x, p, fresh):
            transport = Transport(p, identity_whitening(x.shape[1], x.dtype))
            state = core.init(x, logdensity, transport, static, options.step_size, length)
            adapt = warmup.init(x, fresh, schedule, options.step_size) if num_warmup else None
            return jax.vmap(logdensity)(x), state, adapt

        # compiled: op by op, the first evaluation of the model and the flow costs seconds
        initial, state, adapt = jax.jit(start)(position, params, fresh_params)
        check_initial_energy("NeuTraHMC", initial)
        check_initial_energy("NeuTraHMC", state.walkers.logdensity)
        return state, adapt

    def _sampler(self, logdensity, static, schedule, num_warmup, unravel, dim) -> Callable:
        """NumPyro's ``sample``: the core's step, composed with the warm-up while it lasts."""
        options = self._options
        settings = warmup.Settings(num_warmup, options.target_accept_prob, schedule, options.fit,
                                   options.max_leapfrog, options.trajectory_length is None)
        end_of_warmup = warn_at_end_of_warmup("NeuTraHMC", unravel, dim, num_warmup)

        def adapt_step(key, state, adapt, info, density):
            state, adapt = warmup.update(key, adapt, state, info, density, static, settings)
            end_of_warmup(adapt.i, adapt.window)
            return state, adapt

        def sample(state: NeuTraHMCState, model_args, model_kwargs) -> NeuTraHMCState:
            key, step_key = jax.random.split(state.rng_key)
            step_key = typed_key(step_key)
            adapt = state.adapt
            density = self._logdensity_of(logdensity, unravel, model_args, model_kwargs)  # this run's data
            cap = options.max_leapfrog if adapt is None else warmup.leapfrog_cap(adapt, settings)
            new, info = core.step(step_key, state.core, density, static, cap)
            if adapt is not None:  # warm-up composed with the step (known when tracing)
                new, adapt = jax.lax.cond(adapt.i < num_warmup,
                                          partial(adapt_step, step_key, info=info, density=density),
                                          lambda s, a: (s, a), new, adapt)
            return _wrap(new, info, adapt, state.num_nonfinite + info.num_nonfinite, unravel, key)

        return sample

    def _flow_of(self, state: NeuTraHMCState):
        transport = state.core.transport  # the latent walkers are standard normal: the flow is the proposal
        return transport.params, transport.whitening, True

    @staticmethod
    def without_adaptation(state: NeuTraHMCState) -> NeuTraHMCState:
        """``state`` without its warm-up bookkeeping (the window of positions, the restart bank).

        NumPyro's ``MCMC`` carries one state structure through a ``run``, so a
        run with warm-up keeps it to the end. To sample without it, warm up
        and sample in two calls::

            mcmc.warmup(key)
            mcmc.post_warmup_state = NeuTraHMC.without_adaptation(mcmc.post_warmup_state)
            mcmc.run(key2)
        """
        return state._replace(adapt=None)

    def _backbone(self, key, params, dim, model_args, model_kwargs):
        """The flow of the model's only latent site when it is a flow-backbone Potential."""
        if self._model is None:
            return None
        # substituted values: a Potential cannot be sampled (only the sites' distributions matter here);
        # `params` are unconstrained, the model must see them constrained (a positive scale stays positive)
        seeded = handlers.seed(self._model, key)
        model = handlers.substitute(seeded, data=constrain_fn(seeded, model_args, model_kwargs, params))
        trace = handlers.trace(model).get_trace(*model_args, **model_kwargs)
        latent = [site for site in trace.values() if site["type"] == "sample" and not site["is_observed"]]
        if len(latent) != 1 or not isinstance(latent[0]["fn"], Potential):
            return None
        flow = latent[0]["fn"].backbone
        if flow is None or flow.shape != (dim,):
            return None
        return flow


def _wrap(state: core.CoreState, info: core.CoreInfo, adapt, num_nonfinite, unravel, key) -> NeuTraHMCState:
    num_walkers = state.position.shape[0]
    return NeuTraHMCState(
        z=jax.vmap(unravel)(state.position),
        potential_energy=-state.logdensity,
        accept_prob=info.accept_prob,
        diverging=info.diverging,
        step_size=jnp.full(num_walkers, state.step_size),
        num_steps=jnp.full(num_walkers, info.num_steps),
        num_nonfinite=num_nonfinite,
        core=state,
        adapt=adapt,
        rng_key=key,
    )
