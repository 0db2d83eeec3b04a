"""Functional core of neural-transport HMC on a batch of walkers: one iteration with a fixed transport.

The walkers live in the latent space of a transport ``x = T(z) = loc + M g(z)``
(``g`` a flow's bijection, ``(loc, M)`` a whitening fitted to the chains;
:mod:`ebmppl.numpyro.moves.transport`) and move by HMC on the latent log
density ``log π(T(z)) + log|det J_T(z)|``, which is close to a standard
normal once the flow fits. :func:`init` builds the state; :func:`step` runs
one HMC move with a jittered number of leapfrog steps and returns the new
state and what it reports, apart. Warm-up (step size, transport fits,
trajectory length) is composed with it by :mod:`ebmppl.numpyro.adaptation.neutra`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.flows import identity_whitening, neutra_flow, partition_flow
    >>> from ebmppl.numpyro.kernels import neutra_core
    >>> from ebmppl.numpyro.moves import Transport
    >>> params, static = partition_flow(neutra_flow(jax.random.key(0), 2))
    >>> logdensity = lambda x: -0.5 * jnp.sum(x**2)
    >>> transport = Transport(params, identity_whitening(2))
    >>> state = neutra_core.init(jnp.zeros((4, 2)), logdensity, transport, static, 0.5, 1.5)
    >>> state, info = neutra_core.step(jax.random.key(1), state, logdensity, static, 16)
    >>> int(info.num_steps)  # ceil(jittered length / step size)
    4
    >>> moved = neutra_core.relocate(state, jnp.ones((4, 2)), logdensity, static)  # same transport, new place
    >>> moved.position.tolist()[0], float(moved.logdensity[0])
    ([1.0, 1.0], -1.0)
    >>> (value, aux), grad = neutra_core.value_and_grad(logdensity, transport, static)(moved.walkers.position)
    >>> grad.shape, len(neutra_core.step_keys(jax.random.key(2)))
    ((4, 2), 3)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ebmppl.numpyro.moves import LocalState, Transport, hmc_step, latent_logdensity, transport_maps

__all__ = ["CoreInfo", "CoreState", "init", "relocate", "step", "step_keys", "value_and_grad"]


class CoreState(NamedTuple):
    """Walkers and the fixed parts of the kernel: what the next iteration needs, nothing more.

    Attributes:
        walkers: the walkers in the latent space (a :class:`~ebmppl.numpyro.moves.LocalState`
            of the latent log density), with ``aux = (T(z), log π(T(z)))``, their
            data-space positions and the target's log density there.
        step_size: the leapfrog step size (a scalar).
        trajectory_length: the mean trajectory length (a scalar).
        transport: the :class:`~ebmppl.numpyro.moves.Transport`.
    """

    walkers: LocalState
    step_size: jax.Array
    trajectory_length: jax.Array
    transport: Transport

    @property
    def position(self) -> jax.Array:
        """Shape ``(C, D)``, the walkers in data space."""
        return self.walkers.aux[0]

    @property
    def logdensity(self) -> jax.Array:
        """Shape ``(C,)``, the target's log density at :attr:`position`."""
        return self.walkers.aux[1]


class CoreInfo(NamedTuple):
    """What one iteration reports.

    Attributes:
        accept_prob: shape ``(C,)``, acceptance probability of the move.
        diverging: shape ``(C,)``, whether the trajectory diverged.
        num_steps: leapfrog steps of the trajectory (a scalar).
        num_nonfinite: shape ``(C,)``, 1 where the proposal was rejected
            because the target's log density or gradient was not finite there.
    """

    accept_prob: jax.Array
    diverging: jax.Array
    num_steps: jax.Array
    num_nonfinite: jax.Array


def value_and_grad(logdensity: Callable, transport: Transport, flow_static) -> Callable:
    """The batched latent log density and its gradient, ``z -> ((value, (T(z), log π(T(z)))), grad)``."""
    return jax.vmap(jax.value_and_grad(latent_logdensity(logdensity, transport, flow_static), has_aux=True))


def init(position: jax.Array, logdensity: Callable, transport: Transport, flow_static, step_size,
         trajectory_length) -> CoreState:
    """The state of walkers at data-space ``position`` (shape ``(C, D)``) under ``transport``.

    Args:
        position: shape ``(C, D)``.
        logdensity: the target's log density of one data-space point.
        transport: the :class:`~ebmppl.numpyro.moves.Transport`.
        flow_static: the static part of the flow.
        step_size: the leapfrog step size.
        trajectory_length: the mean trajectory length.
    """
    dtype = position.dtype
    empty = LocalState(position, jnp.zeros(position.shape[:1], dtype), jnp.zeros_like(position))
    state = CoreState(empty, jnp.asarray(step_size, dtype), jnp.asarray(trajectory_length, dtype), transport)
    return relocate(state, position, logdensity, flow_static)


def relocate(state: CoreState, position: jax.Array, logdensity: Callable, flow_static) -> CoreState:
    """Put the walkers at data-space ``position`` under the state's transport."""
    _, inverse = transport_maps(state.transport, flow_static)
    latent = jax.vmap(inverse)(position)
    (value, aux), grad = value_and_grad(logdensity, state.transport, flow_static)(latent)
    return state._replace(walkers=LocalState(latent, value, grad, aux))


def step_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """An iteration's key split for the trajectory's jitter, the HMC move and the warm-up.

    The core uses the first two whether or not adaptation is composed with
    it, so the draws of a run do not depend on how its warm-up is wired.
    """
    jitter_key, hmc_key, adapt_key = jax.random.split(key, 3)
    return jitter_key, hmc_key, adapt_key


def step(key: jax.Array, state: CoreState, logdensity: Callable, flow_static,
         max_leapfrog) -> tuple[CoreState, CoreInfo]:
    """One HMC move of every walker in the latent space, with a jittered trajectory length.

    Args:
        key: JAX key (split by :func:`step_keys`).
        state: the current :class:`CoreState`.
        logdensity: the target's log density of one data-space point.
        flow_static: the static part of the flow.
        max_leapfrog: cap on the leapfrog steps of the trajectory (may be traced).

    Returns:
        The next :class:`CoreState` and the iteration's :class:`CoreInfo`.
    """
    jitter_key, hmc_key, _ = step_keys(key)
    # Jittered trajectory length (uniform on [0.5, 1.5] of the mean) against periodic orbits.
    length = state.trajectory_length * jax.random.uniform(jitter_key, (), minval=0.5, maxval=1.5)
    num_steps = jnp.clip(jnp.ceil(length / state.step_size), 1, max_leapfrog).astype(jnp.int32)
    fn = value_and_grad(logdensity, state.transport, flow_static)
    walkers, info = hmc_step(hmc_key, state.walkers, fn, state.step_size, num_steps, has_aux=True)
    return state._replace(walkers=walkers), CoreInfo(info.accept_prob, info.diverging, num_steps,
                                                     info.num_nonfinite)
