"""``log Z`` by importance sampling with a flow (Pyro): of a ``Potential``, and of a sampled model.

With draws ``x_i ~ q`` from a flow close to the model,
``Z = E_q[exp(-E(x)) base(x) / q(x)]``; the estimate comes with its standard
error and the effective sample size of the weights, and a warning when that
is too low to trust. :func:`log_evidence` does the same for any model
sampled with ``FlowMCMC`` or ``NeuTraHMC``, with the flow the run froze: the
model's log marginal likelihood ``log p(data)``. Randomness comes from
torch's generator.

Example:
    >>> import math, torch, pyro.distributions as dist
    >>> from ebmppl.pyro import Potential, log_partition
    >>> _ = torch.manual_seed(0)
    >>> gaussian = Potential(lambda x: 0.5 * (x**2).sum(-1), event_shape=(2,))  # Z = 2π
    >>> proposal = dist.Normal(0.0, 1.2).expand([2]).to_event(1)
    >>> estimate = log_partition(gaussian, proposal, 20_000)
    >>> abs(estimate.log_z - math.log(2 * math.pi)) < 3 * estimate.stderr
    True
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ebmppl.partition import LogPartition, log_partition_from_log_weights
from ebmppl.pyro.flows import proposal_log_prob, proposal_sample_and_log_prob, wide_gaussian_log_prob
from ebmppl.pyro.kernels.setup import WalkerKernel
from ebmppl.pyro.potential import Potential

__all__ = ["log_evidence", "log_partition"]


def log_partition(potential: Potential, flow, num_samples: int = 10_000, *, defensive: float = 0.1,
                  batch_size: int = 8192) -> LogPartition:
    """Estimate ``log Z = log ∫ exp(-E(x)) base(x) dx`` with draws from ``flow``.

    When the potential has a ``base``, a fraction ``defensive`` of the draws
    come from it and every weight uses the mixture ``(1-a)·q + a·base``
    (defensive importance sampling): the weights stay bounded by
    ``exp(-E)/a`` even where the flow has too little mass, which would
    otherwise bias ``log Z`` low with an over-confident standard error.

    Args:
        potential: a :class:`~ebmppl.pyro.Potential` (its ``log_prob`` is the
            unnormalized log density).
        flow: the proposal: a flow module (``flow()`` is a distribution, as
            ``default_flow``'s or zuko's) or a torch distribution of the
            potential's event shape, close to the model (e.g. the flow an
            ``EBMTrainer`` trained beside it).
        num_samples: draws in all.
        defensive: share of the draws from the base (0 for none).
        batch_size: draws evaluated at once.

    Returns:
        A :class:`~ebmppl.partition.LogPartition` ``(log_z, stderr, ess, num_samples)``.

    Raises:
        ValueError: shapes that do not match, or NaN energies at the draws.
    """
    distribution = flow() if isinstance(flow, nn.Module) else flow
    event_shape = tuple(potential.event_shape)
    if tuple(distribution.event_shape) != event_shape:
        raise ValueError(
            f"the flow's draws have shape {tuple(distribution.event_shape)}, the potential's "
            f"event_shape is {event_shape}"
        )
    if not 0.0 <= defensive < 1.0:
        raise ValueError(f"defensive must be in [0, 1), got {defensive}")
    base = potential.base if defensive > 0 else None
    num_base = 0 if base is None else int(round(defensive * num_samples))
    share = num_base / num_samples
    log_weights = []
    with torch.no_grad():
        for source, count_all in ((distribution, num_samples - num_base), (base, num_base)):
            for start in range(0, count_all, batch_size):
                count = min(batch_size, count_all - start)
                if source is base:
                    x = base.sample((count,))
                    log_q = distribution.log_prob(x)
                elif hasattr(distribution, "rsample_and_log_prob"):
                    x, log_q = distribution.rsample_and_log_prob((count,))
                else:
                    x = distribution.sample((count,))
                    log_q = distribution.log_prob(x)
                if share > 0:
                    log_q = torch.logaddexp(math.log1p(-share) + log_q, math.log(share) + base.log_prob(x))
                log_weights.append((potential.log_prob(x) - log_q).double().cpu().numpy())
    return log_partition_from_log_weights(np.concatenate(log_weights))


def log_evidence(mcmc, num_samples: int = 10_000, *, defensive: float = 0.1, batch_size: int = 8192) -> LogPartition:
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
    walkers' spread at the last fit), and every weight uses the mixture of
    the two: a flow that misses some mass cannot make the weights unbounded
    there.

    Args:
        mcmc: a Pyro ``MCMC`` (one chain: the walkers are the chains) that has
            run a :class:`~ebmppl.pyro.FlowMCMC` or :class:`~ebmppl.pyro.NeuTraHMC`.
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
        >>> import math, torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from ebmppl.pyro import FlowMCMC, log_evidence
        >>> def model(y):  # mu ~ N(0, 1), y | mu ~ N(mu, 1): p(y) = N(y; 0, 2)
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> pyro.set_rng_seed(0)
        >>> mcmc = MCMC(FlowMCMC(model, num_walkers=8), warmup_steps=300, num_samples=100,
        ...             disable_progbar=True)
        >>> mcmc.run(torch.tensor(1.5))
        >>> estimate = log_evidence(mcmc)
        >>> exact = float(dist.Normal(0.0, math.sqrt(2.0)).log_prob(torch.tensor(1.5)))
        >>> abs(estimate.log_z - exact) < 3 * estimate.stderr
        True
    """
    kernel = getattr(mcmc, "kernel", None)
    if not isinstance(kernel, WalkerKernel):
        raise TypeError(
            f"log_evidence needs a Pyro MCMC that ran FlowMCMC or NeuTraHMC, got one with {kernel!r}"
        )
    if not 0.0 <= defensive < 1.0:
        raise ValueError(f"defensive must be in [0, 1), got {defensive}")
    flow, whitening, logdensity = kernel._frozen_proposal()
    dim = whitening.loc.shape[0]
    num_wide = int(round(defensive * num_samples))
    share = num_wide / num_samples

    def log_weights(x, log_q):
        if share > 0:
            log_q = torch.logaddexp(math.log1p(-share) + log_q, math.log(share) + wide_gaussian_log_prob(whitening, x))
        return (logdensity(x) - log_q).double().cpu().numpy()

    def from_flow(count):
        return log_weights(*proposal_sample_and_log_prob(flow, whitening, (count,)))

    def from_wide(count):
        noise = torch.randn(count, dim, dtype=whitening.loc.dtype, device=whitening.loc.device)
        x = whitening.loc + 2.0 * noise @ whitening.matrix.T
        return log_weights(x, proposal_log_prob(flow, whitening, x))

    with torch.no_grad():
        found = [_in_batches(from_flow, num_samples - num_wide, batch_size),
                 _in_batches(from_wide, num_wide, batch_size)]
    return log_partition_from_log_weights(np.concatenate(found), name="log_evidence")


def _in_batches(fn, count: int, batch_size: int) -> np.ndarray:
    """``count`` values of ``fn(size)``, at most ``batch_size`` at a time."""
    parts = [fn(min(batch_size, count - start)) for start in range(0, count, batch_size)]
    return np.concatenate(parts) if parts else np.zeros(0)
