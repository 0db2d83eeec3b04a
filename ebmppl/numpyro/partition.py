"""``log Z`` of a ``Potential`` by importance sampling with a flow (NumPyro).

With draws ``x_i ~ q`` from a flow close to the model,
``Z = E_q[exp(-E(x)) base(x) / q(x)]``; the estimate comes with its standard
error and the effective sample size of the weights, and a warning when that
is too low to trust. ``log Z`` turns the unnormalized ``Potential.log_prob``
into a normalized log-likelihood that can be compared across models.

Example:
    >>> import jax, jax.numpy as jnp, math
    >>> import numpyro.distributions as dist
    >>> from ebmppl.numpyro import Potential, log_partition
    >>> gaussian = Potential(lambda x: 0.5 * jnp.sum(x**2, -1), event_shape=(2,))  # Z = 2π
    >>> proposal = dist.Normal(0.0, 1.2).expand([2]).to_event(1)
    >>> estimate = log_partition(jax.random.key(0), gaussian, proposal, 20_000)
    >>> abs(estimate.log_z - math.log(2 * math.pi)) < 3 * estimate.stderr
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ebmppl.partition import LogPartition, log_partition_from_log_weights
from ebmppl.numpyro.keys import typed_key
from ebmppl.numpyro.potential import Potential

__all__ = ["log_partition"]


def log_partition(
    rng_key: jax.Array,
    potential: Potential,
    flow,
    num_samples: int = 10_000,
    *,
    defensive: float = 0.1,
    batch_size: int = 8192,
) -> LogPartition:
    """Estimate ``log Z = log ∫ exp(-E(x)) base(x) dx`` with draws from ``flow``.

    When the potential has a ``base``, a fraction ``defensive`` of the draws
    come from it and every weight uses the mixture ``(1-a)·q + a·base``
    (defensive importance sampling): the weights stay bounded by
    ``exp(-E)/a`` even where the flow has too little mass, which would
    otherwise bias ``log Z`` low with an over-confident standard error.

    Args:
        rng_key: JAX key (``jax.random.key`` or ``jax.random.PRNGKey``).
        potential: a :class:`~ebmppl.numpyro.Potential` (its ``log_prob`` is
            the unnormalized log density).
        flow: the proposal: a flowjax distribution or a NumPyro distribution
            of the potential's event shape, close to the model (e.g. the flow
            an ``EBMTrainer`` trained beside it).
        num_samples: draws in all.
        defensive: share of the draws from the base (0 for none).
        batch_size: draws evaluated at once.

    Returns:
        A :class:`~ebmppl.partition.LogPartition` ``(log_z, stderr, ess, num_samples)``.

    Raises:
        ValueError: shapes that do not match, or NaN energies at the draws.
    """
    event_shape = tuple(potential.event_shape)
    shape = getattr(flow, "shape", None)  # flowjax; a NumPyro distribution has event_shape (and a shape method)
    flow_shape = tuple(shape) if isinstance(shape, tuple) else tuple(flow.event_shape)
    if flow_shape != event_shape:
        raise ValueError(f"the flow's draws have shape {flow_shape}, the potential's event_shape is {event_shape}")
    if not 0.0 <= defensive < 1.0:
        raise ValueError(f"defensive must be in [0, 1), got {defensive}")
    base = potential.base if defensive > 0 else None
    num_base = 0 if base is None else int(round(defensive * num_samples))
    share = num_base / num_samples
    flow_key, base_key = jax.random.split(typed_key(rng_key))
    log_weights = []
    for source, count_all, key in ((flow, num_samples - num_base, flow_key), (base, num_base, base_key)):
        for i, chunk_key in enumerate(jax.random.split(key, max(1, -(-count_all // batch_size)))):
            count = min(batch_size, count_all - i * batch_size)
            if count <= 0:
                break
            x, log_q = _sample_and_log_prob(flow, chunk_key, count) if source is flow else (
                base.sample(chunk_key, (count,)), None)
            if log_q is None:
                log_q = flow.log_prob(x)
            if share > 0:
                log_q = jnp.logaddexp(jnp.log1p(-share) + log_q, jnp.log(share) + base.log_prob(x))
            log_weights.append(np.asarray(potential.log_prob(x) - log_q))
    return log_partition_from_log_weights(np.concatenate(log_weights))


def _sample_and_log_prob(flow, key, count):
    if hasattr(flow, "sample_and_log_prob"):  # flowjax
        return flow.sample_and_log_prob(key, (count,))
    x = flow.sample(key, (count,))
    return x, flow.log_prob(x)
