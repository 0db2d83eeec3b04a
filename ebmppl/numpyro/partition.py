"""``log Z`` by importance sampling with a flow (NumPyro): of a ``Potential``, and of a sampled model.

With draws ``x_i ~ q`` from a flow close to the model,
``Z = E_q[exp(-E(x)) base(x) / q(x)]``; the estimate comes with its standard
error and the effective sample size of the weights, and a warning when that
is too low to trust. ``log Z`` turns the unnormalized ``Potential.log_prob``
into a normalized log-likelihood that can be compared across models.
:func:`log_evidence` does the same for any model sampled with ``FlowMCMC``
or ``NeuTraHMC``, with the flow the run froze: the model's log marginal
likelihood ``log p(data)``.

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

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ebmppl.partition import LogPartition, log_partition_from_log_weights
from ebmppl.numpyro.flows import proposal_log_prob, proposal_sample_and_log_prob, wide_gaussian_log_prob
from ebmppl.numpyro.kernels.setup import EnsembleKernel
from ebmppl.numpyro.keys import typed_key
from ebmppl.numpyro.potential import Potential

__all__ = ["log_evidence", "log_partition"]


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


def log_evidence(
    rng_key: jax.Array,
    mcmc,
    num_samples: int = 10_000,
    *,
    defensive: float = 0.1,
    batch_size: int = 8192,
) -> LogPartition:
    """The log marginal likelihood (evidence) of a model sampled with ``FlowMCMC`` or ``NeuTraHMC``.

    ``log Z = log ∫ exp(-U(u)) du`` over the model's unconstrained latent
    space, ``U`` the potential energy the kernel sampled: the log joint of
    the latent and observed sites plus the log-Jacobians of the transforms
    to the constrained sites, so ``Z = p(data)`` (times the unknown constant
    of any unnormalized ``Potential`` site). It is estimated by importance
    sampling with the flow the run froze at the end of warm-up
    (``FlowMCMC``'s proposal, ``NeuTraHMC``'s transport of a standard normal),
    which is already fitted to the posterior. A share ``defensive`` of the
    draws comes from a Gaussian twice as wide as the run's whitening (the
    chains' spread at the last fit), and every weight uses the mixture of the
    two: a flow that misses some mass cannot make the weights unbounded there.

    Args:
        rng_key: JAX key.
        mcmc: a NumPyro ``MCMC`` that has run (or warmed up) a
            :class:`~ebmppl.numpyro.FlowMCMC` or :class:`~ebmppl.numpyro.NeuTraHMC`.
        num_samples: proposal draws in all.
        defensive: share of the draws from the wide Gaussian (0 for none).
        batch_size: draws evaluated at once.

    Returns:
        A :class:`~ebmppl.partition.LogPartition` ``(log_z, stderr, ess, num_samples)``
        for the model with the arguments of the last ``mcmc.run``, with a
        warning when the weights' ESS is below 1% of the draws.

    Raises:
        TypeError: ``mcmc`` did not run an ebmppl kernel.
        ValueError: no run yet, a flow never fitted, NaN log densities at the draws.

    Example:
        >>> import jax, jax.numpy as jnp, math, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC
        >>> from ebmppl.numpyro import FlowMCMC, log_evidence
        >>> def model(y):  # mu ~ N(0, 1), y | mu ~ N(mu, 1): p(y) = N(y; 0, 2)
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> mcmc = MCMC(FlowMCMC(model), num_warmup=300, num_samples=100, num_chains=8,
        ...             chain_method="vectorized", progress_bar=False)
        >>> mcmc.run(jax.random.key(0), 1.5)
        >>> estimate = log_evidence(jax.random.key(1), mcmc)
        >>> exact = float(dist.Normal(0.0, math.sqrt(2.0)).log_prob(1.5))
        >>> abs(estimate.log_z - exact) < 3 * estimate.stderr
        True
    """
    kernel = getattr(mcmc, "sampler", None)
    if not isinstance(kernel, EnsembleKernel):
        raise TypeError(
            f"log_evidence needs a NumPyro MCMC that ran FlowMCMC or NeuTraHMC, got one with {kernel!r}"
        )
    if not 0.0 <= defensive < 1.0:
        raise ValueError(f"defensive must be in [0, 1), got {defensive}")
    state = mcmc.last_state if mcmc.last_state is not None else mcmc.post_warmup_state
    flow, whitening, logdensity = kernel._frozen_proposal(state, getattr(mcmc, "_args", ()),
                                                         getattr(mcmc, "_kwargs", {}))
    dim = whitening.loc.shape[0]
    num_wide = int(round(defensive * num_samples))
    share = num_wide / num_samples

    def log_weights(x, log_q):
        if share > 0:
            log_q = jnp.logaddexp(jnp.log1p(-share) + log_q, jnp.log(share) + wide_gaussian_log_prob(whitening, x))
        return jax.vmap(logdensity)(x) - log_q

    @partial(jax.jit, static_argnums=1)
    def from_flow(key, count):
        return log_weights(*proposal_sample_and_log_prob(flow, whitening, key, (count,)))

    @partial(jax.jit, static_argnums=1)
    def from_wide(key, count):
        x = whitening.loc + 2.0 * jax.random.normal(key, (count, dim), whitening.loc.dtype) @ whitening.matrix.T
        return log_weights(x, proposal_log_prob(flow, whitening, x))

    flow_key, wide_key = jax.random.split(typed_key(rng_key))
    found = [_in_batches(from_flow, flow_key, num_samples - num_wide, batch_size),
             _in_batches(from_wide, wide_key, num_wide, batch_size)]
    return log_partition_from_log_weights(np.concatenate(found), name="log_evidence")


def _in_batches(fn, key, count: int, batch_size: int) -> np.ndarray:
    """``count`` values of ``fn(key, size)`` in equal batches (one compilation), as float64."""
    if count <= 0:
        return np.zeros(0)
    num_batches = -(-count // batch_size)
    size = -(-count // num_batches)
    parts = [np.asarray(fn(k, size), np.float64) for k in jax.random.split(key, num_batches)]
    return np.concatenate(parts)[:count]
