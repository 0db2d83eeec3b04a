"""``FlowMCMC``: NumPyro's ``MCMCKernel`` interface over :mod:`ebmppl.numpyro.kernels.core`."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from numpyro.infer.initialization import init_to_uniform

from ebmppl.numpyro.adaptation import flow_mcmc as warmup
from ebmppl.numpyro.flows import default_flow, identity_whitening, partition_flow
from ebmppl.numpyro.kernels import core
from ebmppl.numpyro.kernels.setup import (
    EnsembleKernel,
    RunParts,
    build_flow,
    check_initial_energy,
    warn_at_end_of_warmup,
)
from ebmppl.numpyro.keys import typed_key
from ebmppl.options import FlowMCMCOptions
from ebmppl.schedule import WarmupSchedule

__all__ = ["FlowMCMC", "FlowMCMCState", "proposal_flow"]


def proposal_flow(key: jax.Array, dim: int):
    """``FlowMCMC``'s default proposal: :func:`~ebmppl.numpyro.flows.default_flow` with 16 knots on ``[-3, 3]``.

    The flow acts on coordinates standardised on the chains, where nearly
    all of the chains' mass lies within ±3; there, 16 bins of width 0.375
    hold narrow, far-apart modes that 8 bins over ±5 (``default_flow``'s
    defaults, 1.25 wide) blur. On GMM-40's 40 modes, fitted to exact draws
    by forward KL, the importance ESS per draw rose from 0.19 to 0.41.
    Beyond ±3 the splines are the identity: the tails are those of the
    Gaussian base, widened by the defensive mixture (``defensive``).

    Example:
        >>> import jax
        >>> from ebmppl.numpyro.kernels.flow_mcmc import proposal_flow
        >>> proposal_flow(jax.random.key(0), 3).shape
        (3,)
    """
    return default_flow(key, dim, knots=16, interval=3.0)


class FlowMCMCState(NamedTuple):
    """What NumPyro's ``MCMC`` carries between iterations (leading axis: chains).

    Attributes:
        z: the walkers in the unconstrained space, as the model's pytree.
        potential_energy: shape ``(C,)``, ``-log density`` at ``z``.
        accept_prob: shape ``(C,)``, mean acceptance probability of the
            iteration's moves.
        global_accept_prob: shape ``(C,)``, probability that the flow move
            left the current state (0 before the flow is fitted).
        local_accept_prob: shape ``(C,)``, mean acceptance of the local moves.
        step_size: shape ``(C,)``, the local step size.
        num_nonfinite: shape ``(C,)``, running count of rejected proposals
            with a non-finite energy.
        core: the :class:`~ebmppl.numpyro.kernels.core.CoreState` (walkers, step size, flow).
        adapt: the warm-up's :class:`~ebmppl.numpyro.adaptation.flow_mcmc.AdaptState`;
            ``None`` in a run without warm-up (see :meth:`FlowMCMC.without_adaptation`).
        rng_key: one JAX key shared by the ensemble.
    """

    z: Any
    potential_energy: jax.Array
    accept_prob: jax.Array
    global_accept_prob: jax.Array
    local_accept_prob: jax.Array
    step_size: jax.Array
    num_nonfinite: jax.Array
    core: core.CoreState
    adapt: warmup.AdaptState | None
    rng_key: jax.Array


class FlowMCMC(EnsembleKernel):
    """Flow-assisted MCMC: local MALA/HMC moves plus global moves from a normalizing flow.

    An ensemble kernel: all chains advance together and share one flow, which
    is fitted by forward KL to the recent states of every chain during
    warm-up (see :class:`WarmupSchedule`) and frozen afterwards. Each
    iteration makes one global i-SIR move with ``num_particles`` candidates
    (independent Metropolis-Hastings when ``num_particles=2``), then
    ``num_local_steps`` MALA moves (HMC with ``local_kernel="hmc"``) whose
    step size is adapted during warm-up. It works on the unconstrained
    latent space of any model and reports draws in the constrained space.

    Run it with ``MCMC(kernel, ..., num_chains=C, chain_method="vectorized")``,
    ``C >= 2``; 20 to 100 chains suit most targets.

    Args:
        model: a NumPyro model (exactly one of ``model``, ``potential_fn``).
        potential_fn: potential energy (negative log density) of one chain's
            unconstrained parameters; then ``init_params`` must be given to
            ``MCMC.run``, with a leading axis of size ``num_chains``.
        flow: the proposal: ``None`` for :func:`~ebmppl.numpyro.kernels.flow_mcmc.proposal_flow` (a
            rational-quadratic spline coupling flow, 16 knots on ±3), a factory
            ``(key, dim) -> flow``, or a flowjax distribution of shape ``(D,)``
            with an exact inverse. A flow instance is used as given (on
            whitened coordinates once refitted) from the first iteration;
            fresh restarts need a factory.
        num_particles: i-SIR candidates per chain, the current state included.
        num_local_steps: local moves per iteration.
        local_kernel: ``"mala"`` or ``"hmc"``.
        num_leapfrog: leapfrog steps per HMC move (1 for MALA).
        step_size: initial local step size.
        target_accept_prob: local acceptance that step-size adaptation aims at.
        schedule: the :class:`WarmupSchedule`; ``None`` for
            ``WarmupSchedule.default(num_warmup)``.
        defensive: share of the global candidates drawn from a Gaussian
            with the centre of the chains at the last fit and twice their
            spread (the whitening); the proposal is the mixture of the flow
            and that Gaussian. A mode the flow was never fitted on (no chain
            had reached it) can still be proposed, and the weights stay
            bounded where the flow has too little mass; 0 for the flow alone.
        init_strategy: NumPyro init strategy when ``model`` is given.

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC
        >>> from ebmppl.numpyro import FlowMCMC
        >>> def model():
        ...     numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        >>> mcmc = MCMC(FlowMCMC(model), num_warmup=100, num_samples=50, num_chains=8,
        ...             chain_method="vectorized", progress_bar=False)
        >>> mcmc.run(jax.random.key(0))
        >>> mcmc.get_samples()["x"].shape
        (400, 2)
        >>> FlowMCMC(model)  # its settings at a glance (a table in a notebook)
        FlowMCMC(model=model, flow=default, num_particles=16, num_local_steps=3, local_kernel='mala',
                 num_leapfrog=1, step_size=0.1, target_accept_prob=0.65, schedule=default, defensive=0.1)
    """

    def __init__(
        self,
        model: Callable | None = None,
        *,
        potential_fn: Callable | None = None,
        flow: Any = None,
        num_particles: int = 16,
        num_local_steps: int = 3,
        local_kernel: str = "mala",
        num_leapfrog: int | None = None,
        step_size: float = 0.1,
        target_accept_prob: float = 0.65,
        schedule: WarmupSchedule | None = None,
        defensive: float = 0.1,
        init_strategy: Callable = init_to_uniform,
    ):
        super().__init__("FlowMCMC", model, potential_fn, flow, init_strategy)
        self._options = FlowMCMCOptions(
            num_particles=num_particles, num_local_steps=num_local_steps, local_kernel=local_kernel,
            num_leapfrog=num_leapfrog, step_size=step_size, target_accept_prob=target_accept_prob,
            schedule=schedule, defensive=defensive,
        ).validate()

    # --- what NumPyro's MCMC reads -------------------------------------------------
    @property
    def default_fields(self):
        return ("z", "accept_prob", "potential_energy", "global_accept_prob", "local_accept_prob")

    def get_diagnostics_str(self, state: FlowMCMCState) -> str:
        return "global acc. {:.2f}, local acc. {:.2f}, step {:.2e}".format(
            float(jnp.mean(state.global_accept_prob)),
            float(jnp.mean(state.local_accept_prob)),
            float(state.step_size[0]),
        )

    # --- init / sample ---------------------------------------------------------------
    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs={}):
        walkers = self._walkers(rng_key, init_params, model_args, model_kwargs)
        key, flow_key, logdensity, unravel, position = (
            walkers.key, walkers.flow_key, walkers.logdensity, walkers.unravel, walkers.position
        )
        num_chains, dim = position.shape

        def target_of(density):
            return core.Target(jax.vmap(density), jax.vmap(jax.value_and_grad(density)))

        target = target_of(logdensity)
        options = self._options
        schedule = self._schedule = options.schedule_for(num_warmup)
        flow, fresh_params, ready = build_flow(self._flow, proposal_flow, flow_key, dim, schedule)
        params, static = partition_flow(flow)
        config = core.Config(options.num_local_steps, options.num_leapfrog, options.num_particles,
                                options.defensive)
        settings = warmup.Settings(num_warmup, options.target_accept_prob, schedule)

        def start(x, p, fresh):
            identity = identity_whitening(dim, x.dtype)
            state = core.init(x, target, core.FlowState(p, identity, jnp.asarray(ready), identity), options.step_size)
            adapt = warmup.init(x, fresh, schedule, options.step_size) if num_warmup else None
            return state, adapt

        # compiled: op by op, the first evaluation of the model and the flow costs seconds
        state, adapt = jax.jit(start)(position, params, fresh_params)
        check_initial_energy("FlowMCMC", state.logdensity)
        end_of_warmup = warn_at_end_of_warmup("FlowMCMC", unravel, dim, num_warmup)

        def adapt_step(key, state, adapt, info):
            state, adapt = warmup.update(key, adapt, state, info, static, settings)
            end_of_warmup(adapt.i, adapt.window)
            return state, adapt

        def sample(state: FlowMCMCState, model_args, model_kwargs) -> FlowMCMCState:
            key, step_key = jax.random.split(state.rng_key)
            step_key = typed_key(step_key)
            density = self._logdensity_of(logdensity, unravel, model_args, model_kwargs)  # this run's data
            new, info = core.step(step_key, state.core, target_of(density), static, config)
            adapt = state.adapt
            if adapt is not None:  # warm-up composed with the step (known when tracing)
                new, adapt = jax.lax.cond(adapt.i < num_warmup, partial(adapt_step, step_key, info=info),
                                          lambda s, a: (s, a), new, adapt)
            return _wrap(new, info, adapt, state.num_nonfinite + info.num_nonfinite, unravel, key)

        self._sample_fn = sample
        self._run = RunParts(logdensity, unravel, static)
        zeros = jnp.zeros(num_chains, position.dtype)
        info = core.CoreInfo(zeros, zeros, zeros, jnp.zeros(num_chains, jnp.int32))
        return _wrap(state, info, adapt, info.num_nonfinite, unravel, key)

    def _flow_of(self, state: FlowMCMCState):
        flow = state.core.flow
        return flow.params, flow.whitening, flow.ready

    @staticmethod
    def without_adaptation(state: FlowMCMCState) -> FlowMCMCState:
        """``state`` without its warm-up bookkeeping (the window of positions, the restart bank).

        NumPyro's ``MCMC`` carries one state structure through a ``run``, so a
        run with warm-up keeps it to the end. To sample without it (at
        thousands of chains the window is the largest part of the state),
        warm up and sample in two calls::

            mcmc.warmup(key)
            mcmc.post_warmup_state = FlowMCMC.without_adaptation(mcmc.post_warmup_state)
            mcmc.run(key2)
        """
        return state._replace(adapt=None)


def _wrap(state: core.CoreState, info: core.CoreInfo, adapt, num_nonfinite, unravel, key) -> FlowMCMCState:
    num_chains = state.position.shape[0]
    return FlowMCMCState(
        z=jax.vmap(unravel)(state.position),
        potential_energy=-state.logdensity,
        accept_prob=info.accept_prob,
        global_accept_prob=info.global_accept_prob,
        local_accept_prob=info.local_accept_prob,
        step_size=jnp.full(num_chains, state.step_size),
        num_nonfinite=num_nonfinite,
        core=state,
        adapt=adapt,
        rng_key=key,
    )
