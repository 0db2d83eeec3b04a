"""``log Z`` of a ``Potential`` by importance sampling with a flow (Pyro).

With draws ``x_i ~ q`` from a flow close to the model,
``Z = E_q[exp(-E(x)) base(x) / q(x)]``; the estimate comes with its standard
error and the effective sample size of the weights, and a warning when that
is too low to trust. Randomness comes from torch's generator.

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
from ebmppl.pyro.potential import Potential

__all__ = ["log_partition"]


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
