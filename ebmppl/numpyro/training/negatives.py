"""The negatives of one update, one function per ``method`` (NumPyro).

Each function takes ``(key, chains, target, options)`` and returns
:class:`Negatives`: the negative samples ``x-`` and the adapted MALA step
size. :data:`NEGATIVES` maps every name of :data:`ebmppl.options.METHODS`
to its function; the trainer looks the method up there once.

- ``"flow"`` (Grenioux et al. 2023): ``num_rounds`` rounds, each one i-SIR
  move proposed by the flow and ``num_local_steps`` MALA moves, from the
  pool's chains;
- ``"ula"``: the same rounds without the i-SIR move (persistent chains);
- ``"short-run"``: as ``"ula"``, from standard normal noise;
- ``"neutra"`` (NT-EBM, Nijkamp et al. 2020): ``num_local_steps`` MALA moves
  in the flow's latent space, where the log density is
  ``log ρ(z) - E(g(z))``, from base draws, mapped to data by the flow ``g``.

After each round the step size follows Robbins-Monro on its logarithm
toward ``options.target_accept_prob``.

Example:
    >>> from ebmppl.numpyro.training.negatives import NEGATIVES
    >>> from ebmppl.options import METHODS
    >>> sorted(NEGATIVES) == sorted(METHODS)
    True
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ebmppl.numpyro.flows import identity_whitening, proposal_log_prob, proposal_sample_and_log_prob
from ebmppl.numpyro.moves import LocalState, hmc_step, isir_step
from ebmppl.options import TrainerOptions

__all__ = [
    "Chains", "NEGATIVES", "Negatives", "Target", "flow_negatives", "neutra_negatives", "short_run_negatives",
    "ula_negatives",
]


class Chains(NamedTuple):
    """Where the negatives of one update start.

    Attributes:
        start: shape ``(batch_size, D)``, the pool's chains drawn for the update.
        noise_key: JAX key of fresh starting points (``"short-run"``).
        step_size: the current MALA step size.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> Chains(jnp.zeros((4, 2)), jax.random.key(0), jnp.asarray(0.1)).start.shape
        (4, 2)
    """

    start: jax.Array
    noise_key: jax.Array
    step_size: jax.Array


class Target(NamedTuple):
    """The model the negatives are drawn from, with the update's parameters.

    Attributes:
        logdensity: ``(n, D) -> (n,)``, ``-energy`` plus the base's log density.
        energy: ``(n, D) -> (n,)``.
        flow: the flow (a flowjax distribution) with the state's parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> target = Target(lambda x: -jnp.sum(x**2, -1), lambda x: jnp.sum(x**2, -1), None)
        >>> target.energy(jnp.ones((1, 2)))
        Array([2.], dtype=float32)
    """

    logdensity: Callable
    energy: Callable
    flow: Any


class Negatives(NamedTuple):
    """The negatives of one update and what drawing them reports.

    Attributes:
        position: shape ``(batch_size, D)``, the negatives ``x-``.
        step_size: the adapted MALA step size.
        global_accept_prob: mean i-SIR acceptance (0 without global moves).
        local_accept_prob: mean MALA acceptance.

    Example:
        >>> import jax.numpy as jnp
        >>> Negatives(jnp.zeros((4, 2)), 0.1, 0.0, 0.6).local_accept_prob
        0.6
    """

    position: jax.Array
    step_size: jax.Array
    global_accept_prob: jax.Array
    local_accept_prob: jax.Array


def flow_negatives(key: jax.Array, chains: Chains, target: Target, options: TrainerOptions) -> Negatives:
    """``"flow"``: rounds of one i-SIR move proposed by the flow and MALA moves, from the pool's chains.

    Example:
        >>> from ebmppl.numpyro.flows import default_flow
        >>> target = Target(lambda x: -jnp.sum(x**2, -1), None, default_flow(jax.random.key(0), 2))
        >>> options = TrainerOptions(batch_size=4, pool_size=4, num_rounds=2, num_local_steps=1, num_particles=4)
        >>> drawn = flow_negatives(jax.random.key(1), Chains(jnp.zeros((4, 2)), None, 0.3), target, options.validate())
        >>> bool(0 <= drawn.global_accept_prob <= 1)
        True
    """
    return _rounds(key, chains.start, chains.step_size, target, options, global_moves=True)


def ula_negatives(key: jax.Array, chains: Chains, target: Target, options: TrainerOptions) -> Negatives:
    """``"ula"``: rounds of MALA moves only, from the pool's chains (the flow is not used).

    Example:
        >>> gaussian = Target(lambda x: -jnp.sum(x**2, -1), None, None)  # no flow needed
        >>> drawn = ula_negatives(jax.random.key(1), Chains(jnp.zeros((4, 2)), None, 0.3), gaussian,
        ...                       TrainerOptions(method="ula", batch_size=4, pool_size=4, num_local_steps=2).validate())
        >>> drawn.global_accept_prob, drawn.position.shape
        (Array(0., dtype=float32), (4, 2))
    """
    return _rounds(key, chains.start, chains.step_size, target, options, global_moves=False)


def short_run_negatives(key: jax.Array, chains: Chains, target: Target, options: TrainerOptions) -> Negatives:
    """``"short-run"``: as ``"ula"`` from standard normal noise (drawn with ``chains.noise_key``).

    Example:
        >>> far = Chains(jnp.full((4, 2), 100.0), jax.random.key(0), 0.3)  # the pool's chains are not used
        >>> gaussian = Target(lambda x: -jnp.sum(x**2, -1), None, None)
        >>> options = TrainerOptions(method="short-run", batch_size=4, pool_size=4, num_local_steps=1).validate()
        >>> bool(jnp.abs(short_run_negatives(jax.random.key(1), far, gaussian, options).position).max() < 10)
        True
    """
    start = jax.random.normal(chains.noise_key, chains.start.shape, chains.start.dtype)
    return _rounds(key, start, chains.step_size, target, options, global_moves=False)


def neutra_negatives(key: jax.Array, chains: Chains, target: Target, options: TrainerOptions) -> Negatives:
    """``"neutra"``: MALA on ``log ρ(z) - E(g(z))`` from base draws, mapped to data by the flow ``g``.

    ``chains.start`` is not used: the chains start afresh at every update.

    Example:
        >>> from ebmppl.numpyro.flows import default_flow
        >>> flow = default_flow(jax.random.key(0), 2)  # the backbone: here the identity
        >>> options = TrainerOptions(method="neutra", batch_size=4, pool_size=4, num_local_steps=1).validate()
        >>> target = Target(None, lambda x: jnp.sum(x**2, -1), flow)
        >>> neutra_negatives(jax.random.key(1), Chains(None, None, 0.5), target, options).position.shape
        (4, 2)
    """
    flow = target.flow

    def latent(z):
        return flow.base_dist.log_prob(z) - target.energy(flow.bijection.transform(z)[None])[0]

    value_and_grad = jax.vmap(jax.value_and_grad(latent))
    start_key, key = jax.random.split(key)
    z = jax.random.normal(start_key, (options.batch_size,) + flow.shape)
    step_size = jnp.zeros(options.batch_size) + chains.step_size
    walkers, accepts = _mala(key, LocalState(z, *value_and_grad(z)), value_and_grad, step_size, options)
    position = jax.vmap(flow.bijection.transform)(walkers.position)
    return Negatives(position, _adapted(chains.step_size, accepts, options), jnp.zeros(()), accepts.mean())


#: The negatives' function of each ``method`` (the trainer's only dispatch on it).
NEGATIVES: dict[str, Callable[..., Negatives]] = {
    "flow": flow_negatives,
    "ula": ula_negatives,
    "short-run": short_run_negatives,
    "neutra": neutra_negatives,
}


def _rounds(key, start, step_size, target: Target, options: TrainerOptions, global_moves: bool) -> Negatives:
    """``num_rounds`` rounds of (an i-SIR move with ``global_moves``, then) ``num_local_steps`` MALA moves."""
    value_and_grad = jax.vmap(jax.value_and_grad(lambda x: target.logdensity(x[None])[0]))
    zeros = jnp.zeros(start.shape[0])
    whitening = identity_whitening(start.shape[-1])

    def one_round(carry, round_key):
        walkers, step_size = carry
        global_key, local_key = jax.random.split(round_key)
        global_acc = jnp.zeros(())
        if global_moves:
            position, info = isir_step(
                global_key, walkers.position, walkers.logdensity, target.logdensity,
                lambda k, shape: proposal_sample_and_log_prob(target.flow, whitening, k, shape),
                lambda x: proposal_log_prob(target.flow, whitening, x), options.num_particles,
            )
            walkers = LocalState(position, *value_and_grad(position))
            global_acc = info.accept_prob.mean()
        walkers, accepts = _mala(local_key, walkers, value_and_grad, zeros + step_size, options)
        return (walkers, _adapted(step_size, accepts, options)), (global_acc, accepts.mean())

    walkers = LocalState(start, *value_and_grad(start))
    (walkers, step_size), (global_acc, local_acc) = jax.lax.scan(
        one_round, (walkers, step_size), jax.random.split(key, options.num_rounds)
    )
    return Negatives(walkers.position, step_size, global_acc.mean(), local_acc.mean())


def _mala(key, walkers: LocalState, value_and_grad, step_size, options: TrainerOptions):
    """``num_local_steps`` MALA moves; the walkers and each move's mean acceptance."""

    def local(w, step_key):
        w, info = hmc_step(step_key, w, value_and_grad, step_size, 1)
        return w, info.accept_prob.mean()

    return jax.lax.scan(local, walkers, jax.random.split(key, options.num_local_steps))


def _adapted(step_size, accepts, options: TrainerOptions):
    """Robbins-Monro on log(step size) toward the target acceptance."""
    return step_size * jnp.exp(0.1 * (accepts.mean() - options.target_accept_prob))
