"""Normalizing flows used as global proposals and transports, built from flowjax pieces.

A proposal is a flow acting on *whitened* coordinates ``u`` composed with an
affine whitening map ``x = loc + matrix @ u`` fitted to the chains (see
:class:`Whitening`). The package holds one idea per file, mirrored in
:mod:`ebmppl.pyro.flows`: ``whitening`` (the affine maps), ``architectures``
(the default flows), ``protocol`` (what the samplers need of a flow),
``fit`` (forward and reverse KL) and ``checks`` (refusing unfit flows).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.flows import default_flow, identity_whitening, proposal_log_prob
    >>> flow = default_flow(jax.random.key(0), 3)
    >>> proposal_log_prob(flow, identity_whitening(3), jnp.zeros((5, 3))).shape
    (5,)
"""

from ebmppl.numpyro.flows.architectures import default_flow, neutra_flow
from ebmppl.numpyro.flows.checks import check_flow
from ebmppl.numpyro.flows.fit import fit_flow, fit_flow_reverse, restart_candidates
from ebmppl.numpyro.flows.protocol import (
    defensive_proposal,
    join_flow_leaves,
    partition_flow,
    proposal_log_prob,
    proposal_sample_and_log_prob,
    split_flow_leaves,
    wide_gaussian_log_prob,
)
from ebmppl.numpyro.flows.whitening import Whitening, fit_diagonal_whitening, fit_whitening, identity_whitening

__all__ = [
    "Whitening",
    "check_flow",
    "default_flow",
    "defensive_proposal",
    "fit_diagonal_whitening",
    "fit_flow",
    "fit_flow_reverse",
    "fit_whitening",
    "identity_whitening",
    "join_flow_leaves",
    "neutra_flow",
    "partition_flow",
    "proposal_log_prob",
    "proposal_sample_and_log_prob",
    "restart_candidates",
    "split_flow_leaves",
    "wide_gaussian_log_prob",
]
