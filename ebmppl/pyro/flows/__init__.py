"""Normalizing flows used as global proposals and transports (our own torch flows, zuko flows, Pyro transforms).

A proposal is a flow acting on *whitened* coordinates ``u`` composed with an
affine whitening map ``x = loc + matrix @ u`` fitted to the chains (see
:class:`Whitening`). A flow is a module whose call returns a torch
distribution with ``sample``/``rsample`` and ``log_prob`` (a zuko flow); a
Pyro ``TransformedDistribution`` of ``TransformModule`` s is wrapped into one
by :func:`as_flow_module`. The package holds one idea per file, mirrored in
:mod:`ebmppl.numpyro.flows`: ``whitening`` (the affine maps), ``architectures``
(the default flows, written in ``coupling`` and ``autoregressive``),
``protocol`` (what the samplers need of a flow), ``fit`` (forward and reverse
KL) and ``checks`` (refusing unfit flows).

Example:
    >>> import torch
    >>> from ebmppl.pyro.flows import default_flow, identity_whitening, proposal_log_prob
    >>> flow = default_flow(3)
    >>> proposal_log_prob(flow, identity_whitening(3), torch.zeros(5, 3)).shape
    torch.Size([5])
"""

from ebmppl.pyro.flows.architectures import default_flow, neutra_flow
from ebmppl.pyro.flows.checks import check_flow
from ebmppl.pyro.flows.fit import fit_flow, fit_flow_reverse, fresh_copy, restart_candidates
from ebmppl.pyro.flows.protocol import (
    as_flow_module,
    base_log_prob,
    base_maps,
    defensive_proposal,
    proposal_log_prob,
    proposal_sample_and_log_prob,
    wide_gaussian_log_prob,
)
from ebmppl.pyro.flows.whitening import Whitening, fit_diagonal_whitening, fit_whitening, identity_whitening

__all__ = [
    "Whitening",
    "as_flow_module",
    "base_log_prob",
    "base_maps",
    "check_flow",
    "default_flow",
    "defensive_proposal",
    "fit_diagonal_whitening",
    "fit_flow",
    "fit_flow_reverse",
    "fit_whitening",
    "fresh_copy",
    "identity_whitening",
    "neutra_flow",
    "proposal_log_prob",
    "proposal_sample_and_log_prob",
    "restart_candidates",
    "wide_gaussian_log_prob",
]
