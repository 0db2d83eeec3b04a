"""Functional core of flow-assisted MCMC on a batch of walkers: one iteration with a fixed flow.

:func:`init` builds the state from positions; :func:`step` runs one
iteration: a global i-SIR move with the flow (once it has been fitted), then
local HMC/MALA moves preconditioned by the state's ``flow.local``. It
returns the new state and what the iteration reports, apart. Warm-up
(step size, flow fits) is composed with it by
:mod:`ebmppl.numpyro.adaptation.flow_mcmc`; nothing here changes the flow.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.flows import default_flow, identity_whitening, partition_flow
    >>> from ebmppl.numpyro.kernels import core
    >>> logdensity = lambda x: -0.5 * jnp.sum(x**2, -1)
    >>> target = core.Target(logdensity, jax.vmap(jax.value_and_grad(lambda x: logdensity(x))))
    >>> params, static = partition_flow(default_flow(jax.random.key(0), 2))
    >>> flow = core.FlowState(params, identity_whitening(2), jnp.asarray(True), identity_whitening(2))
    >>> state = core.init(jnp.zeros((8, 2)), target, flow, 0.5)
    >>> config = core.Config(num_local_steps=3, num_leapfrog=1, num_particles=4)
    >>> state, info = core.step(jax.random.key(1), state, target, static, config)
    >>> info.accept_prob.shape, state.step_size.shape
    ((8,), ())
    >>> len(core.step_keys(jax.random.key(2)))  # global move, local moves, warm-up
    3
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ebmppl.numpyro.flows import Whitening, defensive_proposal, proposal_log_prob, proposal_sample_and_log_prob
from ebmppl.numpyro.moves import LocalState, hmc_step, isir_step

__all__ = ["Config", "CoreInfo", "CoreState", "FlowState", "Target", "init", "step", "step_keys"]


class Target(NamedTuple):
    """The log density of the walkers, batched over a leading axis.

    Attributes:
        logdensity: ``(n, D) -> (n,)``.
        logdensity_and_grad: ``(n, D) -> ((n,), (n, D))``.
    """

    logdensity: Callable
    logdensity_and_grad: Callable


class Config(NamedTuple):
    """Static settings of the moves (hashable; changes recompile).

    Attributes:
        num_local_steps: local moves per iteration.
        num_leapfrog: leapfrog steps per local move (1 is MALA).
        num_particles: i-SIR candidates per walker (2 is independent MH).
        defensive: share of the candidates from the wide Gaussian of the
            flow's whitening (see :func:`~ebmppl.numpyro.flows.defensive_proposal`).
    """

    num_local_steps: int
    num_leapfrog: int
    num_particles: int
    defensive: float = 0.0


class FlowState(NamedTuple):
    """The proposal: trainable flow parameters and the whitening they act in.

    Attributes:
        params: trainable arrays of the flow (combined with a static part).
        whitening: the affine map from whitened to latent coordinates.
        ready: whether global moves are made (false until the first fit of a
            flow built by ebmppl).
        local: the preconditioner of the local moves: ``M`` with ``M Mᵀ`` the
            inverse covariance of the target's score over the warm-up
            iterations before the last fit (at the target, the inverse Fisher
            information; for a Gaussian, its covariance). Unlike the walkers' covariance, it
            has the shape of one mode, not of the spread between modes.
    """

    params: Any
    whitening: Whitening
    ready: jax.Array
    local: Whitening


class CoreState(NamedTuple):
    """Walkers and the fixed parts of the kernel: what the next iteration needs, nothing more.

    Attributes:
        position: shape ``(C, D)``, unconstrained walkers, flattened.
        logdensity, grad: target log density and gradient at ``position``.
        step_size: the local step size (a scalar).
        flow: the :class:`FlowState`.
    """

    position: jax.Array
    logdensity: jax.Array
    grad: jax.Array
    step_size: jax.Array
    flow: FlowState


class CoreInfo(NamedTuple):
    """What one iteration reports.

    Attributes:
        accept_prob: shape ``(C,)``, mean acceptance probability of the
            iteration's moves (global and local).
        local_accept_prob: shape ``(C,)``, mean acceptance of the local moves.
        global_accept_prob: shape ``(C,)``, probability that the global move
            left the current state (0 when none was made).
        num_nonfinite: shape ``(C,)``, proposals of this iteration rejected
            because the target's log density was not finite there.
    """

    accept_prob: jax.Array
    local_accept_prob: jax.Array
    global_accept_prob: jax.Array
    num_nonfinite: jax.Array


def init(position: jax.Array, target: Target, flow: FlowState, step_size) -> CoreState:
    """The state of walkers at ``position`` (shape ``(C, D)``)."""
    logdensity, grad = target.logdensity_and_grad(position)
    return CoreState(position, logdensity, grad, jnp.asarray(step_size, position.dtype), flow)


def step_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """An iteration's key split for the global move, the local moves and the warm-up.

    The core uses the first two whether or not adaptation is composed with
    it, so the draws of a run do not depend on how its warm-up is wired.
    """
    global_key, local_key, adapt_key = jax.random.split(key, 3)
    return global_key, local_key, adapt_key


def _whitened(logdensity_and_grad: Callable, w: Whitening) -> Callable:
    """The log density and gradient in whitened coordinates ``y``, ``x = loc + M y`` (row vectors)."""

    def fn(y):
        value, grad = logdensity_and_grad(w.loc + y @ w.matrix.T)
        return value, grad @ w.matrix

    return fn


def _proposal(flow, whitening: Whitening, defensive: float):
    """``(sample_and_log_prob, log_prob)`` of the global moves: the flow, or its defensive mixture."""
    if defensive > 0:
        return defensive_proposal(flow, whitening, defensive)
    return (lambda key, shape: proposal_sample_and_log_prob(flow, whitening, key, shape),
            lambda x: proposal_log_prob(flow, whitening, x))


def _global_move(key, state: CoreState, target: Target, flow_static, config: Config):
    flow = eqx.combine(state.flow.params, flow_static)
    whitening = state.flow.whitening

    def move(_):
        position, info = isir_step(
            key,
            state.position,
            state.logdensity,
            target.logdensity,
            *_proposal(flow, whitening, config.defensive),
            config.num_particles,
        )
        logdensity, grad = target.logdensity_and_grad(position)
        return LocalState(position, logdensity, grad), info.accept_prob, info.num_nonfinite

    def skip(_):
        local = LocalState(state.position, state.logdensity, state.grad)
        return local, jnp.zeros_like(state.logdensity), jnp.zeros(state.logdensity.shape, jnp.int32)

    return jax.lax.cond(state.flow.ready, move, skip, None)


def _local_moves(key, walkers: LocalState, state: CoreState, target: Target, config: Config):
    """``num_local_steps`` HMC/MALA moves in coordinates ``y = M⁻¹(x - loc)`` of the preconditioner."""
    w = state.flow.local
    whitened_value_and_grad = _whitened(target.logdensity_and_grad, w)

    def local(carry, local_step_key):
        walkers, nonfinite = carry
        walkers, info = hmc_step(local_step_key, walkers, whitened_value_and_grad, state.step_size,
                                 config.num_leapfrog)
        return (walkers, nonfinite + info.num_nonfinite), info.accept_prob

    start = LocalState((walkers.position - w.loc) @ w.inverse.T, walkers.logdensity, walkers.grad @ w.matrix)
    (whitened, nonfinite), accepts = jax.lax.scan(
        local, (start, jnp.zeros(walkers.logdensity.shape, jnp.int32)),
        jax.random.split(key, config.num_local_steps),
    )
    # walkers that did not move keep their position exactly (no round trip through the whitening)
    moved = jnp.any(whitened.position != start.position, -1, keepdims=True)
    walkers = LocalState(
        jnp.where(moved, w.loc + whitened.position @ w.matrix.T, walkers.position),
        whitened.logdensity,
        jnp.where(moved, whitened.grad @ w.inverse, walkers.grad),
    )
    return walkers, accepts, nonfinite


def step(key: jax.Array, state: CoreState, target: Target, flow_static, config: Config) -> tuple[CoreState, CoreInfo]:
    """One iteration of flow-assisted MCMC (see the module docstring).

    Args:
        key: JAX key (split by :func:`step_keys`).
        state: the current :class:`CoreState`.
        target: the batched log density.
        flow_static: the static part of the flow.
        config: static settings.

    Returns:
        The next :class:`CoreState` and the iteration's :class:`CoreInfo`.
    """
    global_key, local_key, _ = step_keys(key)
    walkers, global_accept, global_nonfinite = _global_move(global_key, state, target, flow_static, config)
    walkers, local_accepts, local_nonfinite = _local_moves(local_key, walkers, state, target, config)
    local_accept = local_accepts.mean(0)
    num_moves = config.num_local_steps + state.flow.ready.astype(local_accept.dtype)
    info = CoreInfo(
        accept_prob=(local_accepts.sum(0) + global_accept) / num_moves,
        local_accept_prob=local_accept,
        global_accept_prob=global_accept,
        num_nonfinite=global_nonfinite + local_nonfinite,
    )
    return state._replace(position=walkers.position, logdensity=walkers.logdensity, grad=walkers.grad), info
