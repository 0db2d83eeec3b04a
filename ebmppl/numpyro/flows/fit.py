"""Fitting flows: to chain states by forward KL (FlowMCMC, the trainer), to the target by reverse KL (NeuTraHMC).

Both fits train several candidates (a leading axis on every trainable leaf)
and keep the one of lowest final loss, with one optimizer recipe: Adam after
clipping the gradients to global norm 10, a step whose gradient is not finite
skipped. The reverse fit also lowers its rate, then stops, on a plateau (see
:class:`~ebmppl.options.FitStopping`). It mirrors :mod:`ebmppl.pyro.flows.fit`.
"""

from __future__ import annotations

import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ebmppl.numpyro.flows.whitening import Whitening
from ebmppl.numpyro.moves.transport import Transport, latent_logdensity
from ebmppl.options import FitStopping

__all__ = ["fit_flow", "fit_flow_reverse", "restart_candidates"]

_STOP = FitStopping()  # when a reverse-KL fit stops
_MAX_GRAD_NORM = 10.0  # gradients are clipped to this global norm before Adam


def restart_candidates(warm_params, fresh_params, num_fits):
    """The candidates of a scheduled refit: the current parameters first, then fit ``num_fits``'s fresh restarts.

    Args:
        warm_params: the flow's current trainable parameters (one flow).
        fresh_params: the restarts' initial parameters, ``(fits, restarts, ...)`` per leaf.
        num_fits: the fits done so far (a traced integer).

    Example:
        >>> import jax.numpy as jnp
        >>> warm = {"w": jnp.zeros(3)}
        >>> fresh = {"w": jnp.ones((2, 4, 3))}  # 2 fits of 4 restarts
        >>> restart_candidates(warm, fresh, jnp.asarray(1))["w"].shape
        (5, 3)
    """
    fresh = jax.tree.map(lambda leaf: leaf[num_fits], fresh_params)
    return jax.tree.map(lambda warm, new: jnp.concatenate([warm[None], new]), warm_params, fresh)


def _adam(learning_rate: float) -> optax.GradientTransformation:
    """The optimizer of both fits: Adam on clipped gradients, a non-finite gradient skipping the step."""
    return optax.chain(
        optax.clip_by_global_norm(_MAX_GRAD_NORM),
        optax.apply_if_finite(optax.adam(learning_rate), max_consecutive_errors=1_000_000),
    )


def _descend(optimizer: optax.GradientTransformation, grads, opt_state, params, scale: jax.Array | None = None):
    """One step of ``optimizer``: ``(params, opt_state)`` after ``grads``, the update times ``scale`` if given."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    if scale is not None:
        updates = jax.tree.map(lambda u: scale * u, updates)
    return optax.apply_updates(params, updates), opt_state


def _best(trained, losses: jax.Array):
    """The candidate of lowest final loss, and every candidate's loss (``inf`` where not finite)."""
    losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
    best = jnp.argmin(losses)
    return jax.tree.map(lambda leaf: leaf[best], trained), losses


def fit_flow(key: jax.Array, candidates, static, data: jax.Array, *, num_steps: int, batch_size: int,
             learning_rate: float):
    """Fit several flow initialisations by forward KL and keep the best.

    Each candidate (a leading axis on every leaf of ``candidates``) is trained
    with Adam on minibatches of ``data``, minimising ``-mean log q(x)``; the one
    with the lowest loss on all of ``data`` is returned. Non-finite gradients
    skip the update.

    Args:
        key: JAX key for the minibatches.
        candidates: stacked trainable parameters, shape ``(K, ...)`` per leaf.
        static: the static part of the flow (from :func:`~ebmppl.numpyro.flows.partition_flow`).
        data: whitened points, shape ``(n, D)``.
        num_steps: Adam steps per candidate.
        batch_size: minibatch size.
        learning_rate: Adam learning rate.

    Returns:
        ``(params, losses)``: the best candidate's parameters and every
        candidate's final loss on ``data`` (shape ``(K,)``).

    Example:
        >>> import jax
        >>> from ebmppl.numpyro.flows import default_flow, fit_flow, partition_flow
        >>> params, static = partition_flow(default_flow(jax.random.key(0), 2))
        >>> candidates = jax.tree.map(lambda leaf: leaf[None], params)  # one candidate
        >>> data = jax.random.normal(jax.random.key(1), (64, 2))
        >>> _, losses = fit_flow(jax.random.key(2), candidates, static, data, num_steps=5, batch_size=16,
        ...                      learning_rate=1e-3)
        >>> losses.shape
        (1,)
    """
    optimizer = _adam(learning_rate)

    def loss_fn(params, batch):
        flow = eqx.combine(params, static)
        return -jnp.mean(flow.log_prob(batch))

    def train_one(params, train_key):
        def step(carry, step_key):
            params, opt_state = carry
            idx = jax.random.randint(step_key, (batch_size,), 0, data.shape[0])
            grads = jax.grad(loss_fn)(params, data[idx])
            return _descend(optimizer, grads, opt_state, params), None

        (params, _), _ = jax.lax.scan(
            step, (params, optimizer.init(params)), jax.random.split(train_key, num_steps)
        )
        return params, loss_fn(params, data)

    num_candidates = jax.tree.leaves(candidates)[0].shape[0]
    return _best(*jax.vmap(train_one)(candidates, jax.random.split(key, num_candidates)))


def fit_flow_reverse(
    key: jax.Array,
    candidates,
    static,
    whitening: Whitening,
    logdensity: Callable,
    *,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
):
    """Fit several transports by reverse KL to the target and keep the best.

    Minimises ``E_{z ~ N(0, I)}[log ρ(z) - log π(T(z)) - log|det J_T(z)|]``
    (the KL from the transport's push-forward to the target, minus ``log Z``) with Adam on
    fresh standard-normal batches; draws where the target is not finite are
    left out of the mean, and non-finite gradients skip the update. A fit
    stops when its loss stops improving (see :class:`~ebmppl.options.FitStopping`):
    ``num_steps`` is a cap. The candidates are trained one after the other and
    the one with the lowest loss on a common batch of ``4 * batch_size``
    draws is returned.

    Returns:
        ``(params, losses)`` as :func:`fit_flow`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ebmppl.numpyro.flows import identity_whitening, neutra_flow, partition_flow
        >>> params, static = partition_flow(neutra_flow(jax.random.key(0), 2))
        >>> candidates = jax.tree.map(lambda leaf: leaf[None], params)  # one candidate
        >>> logdensity = lambda x: -0.5 * jnp.sum((x - 1.0) ** 2)
        >>> _, losses = fit_flow_reverse(jax.random.key(1), candidates, static, identity_whitening(2), logdensity,
        ...                              num_steps=10, batch_size=8, learning_rate=1e-2)
        >>> losses.shape
        (1,)
    """
    dim = whitening.loc.shape[0]

    def loss_fn(params, z):
        return _reverse_kl(logdensity, Transport(params, whitening), static, z)

    def train_one(args):
        params, train_key = args
        return _minimise(train_key, loss_fn, params, dim, num_steps=num_steps, batch_size=batch_size,
                         learning_rate=learning_rate)

    eval_key, train_key = jax.random.split(key)
    num_candidates = jax.tree.leaves(candidates)[0].shape[0]
    trained = jax.lax.map(train_one, (candidates, jax.random.split(train_key, num_candidates)))
    z_eval = jax.random.normal(eval_key, (4 * batch_size, dim))
    return _best(trained, jax.vmap(loss_fn, in_axes=(0, None))(trained, z_eval))


def _reverse_kl(logdensity: Callable, transport: Transport, flow_static, z: jax.Array) -> jax.Array:
    """``mean_z [log ρ(z) - log π(T(z)) - log|det J_T(z)|]`` over the draws where the target is finite."""
    fn = jax.vmap(latent_logdensity(logdensity, transport, flow_static))
    # draws where the target is not finite are left out (else one NaN point would skip the step):
    # they are found first and replaced by z = 0, so that no NaN reaches the gradient
    finite = jax.lax.stop_gradient(jnp.isfinite(fn(z)[0]))
    safe = jnp.where(finite[:, None], z, 0.0)
    # log ρ(z) - latent log density: its mean is KL - log Z, and ρ's share cancels the noise of |z|²
    gap = -0.5 * jnp.sum(safe**2, -1) - fn(safe)[0]
    mean = jnp.sum(jnp.where(finite, gap, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
    return jnp.where(jnp.any(finite), mean, jnp.nan) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def _minimise(key, loss_fn: Callable, params, dim: int, *, num_steps: int, batch_size: int,
              learning_rate: float):
    """Adam on ``loss_fn(params, z)``, ``z`` fresh standard-normal batches, until the loss stops improving.

    Non-finite gradients skip the update. The loss is averaged over chunks of
    :class:`~ebmppl.options.FitStopping` steps; after ``patience`` chunks
    without improvement the rate drops to ``decay`` of itself, after as many
    more the training stops; ``num_steps`` caps it.
    """
    optimizer = _adam(learning_rate)
    chunk = min(_STOP.chunk, num_steps)
    num_chunks = max(1, num_steps // chunk)

    def train_chunk(params, opt_state, scale, chunk_key):
        def one_step(carry, step_key):
            params, opt_state = carry
            z = jax.random.normal(step_key, (batch_size, dim))
            loss, grads = jax.value_and_grad(loss_fn)(params, z)
            return _descend(optimizer, grads, opt_state, params, scale), loss

        (params, opt_state), losses = jax.lax.scan(
            one_step, (params, opt_state), jax.random.split(chunk_key, chunk)
        )
        return params, opt_state, losses

    def keep_going(carry):
        _, _, stage, _, _, n, _ = carry
        return (stage < 2) & (n < num_chunks)

    def body(carry):
        params, opt_state, stage, stalled, best, n, key = carry
        key, chunk_key = jax.random.split(key)
        scale = jnp.where(stage == 0, 1.0, _STOP.decay)
        params, opt_state, losses = train_chunk(params, opt_state, scale, chunk_key)
        mean, stderr = _mean_and_stderr(losses)
        improved = mean < best - jnp.maximum(stderr, _STOP.tolerance)
        stalled = jnp.where(improved, 0, stalled + 1)
        stage = jnp.where(stalled >= _STOP.patience, stage + 1, stage)
        stalled = jnp.where(stalled >= _STOP.patience, 0, stalled)
        best = jnp.where(improved, mean, best)
        return params, opt_state, stage, stalled, best, n + 1, key

    zero = jnp.asarray(0)
    init = (params, optimizer.init(params), zero, zero, jnp.asarray(jnp.inf), zero, key)
    return jax.lax.while_loop(keep_going, body, init)[0]


def _mean_and_stderr(losses: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The mean of a chunk's finite minibatch losses and its standard error (``inf`` if none is finite)."""
    finite = jnp.isfinite(losses)
    count = jnp.sum(finite)
    mean = jnp.sum(jnp.where(finite, losses, 0.0)) / jnp.maximum(count, 1)
    var = jnp.sum(jnp.where(finite, (losses - mean) ** 2, 0.0)) / jnp.maximum(count - 1, 1)
    stderr = jnp.sqrt(var / jnp.maximum(count, 1))
    return jnp.where(count > 0, mean, jnp.inf), jnp.where(count > 1, stderr, jnp.inf)
