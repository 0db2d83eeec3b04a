"""Moves of a batch of walkers, shared by the kernels and the trainer: i-SIR/IMH with a proposal,
one HMC/MALA transition, and the transport of neural-transport moves."""

from ebmppl.pyro.moves.hmc import LocalInfo, LocalState, hmc_step, with_grad
from ebmppl.pyro.moves.isir import GlobalInfo, isir_step
from ebmppl.pyro.moves.transport import Transport, latent_logdensity, transport_maps

__all__ = ["GlobalInfo", "LocalInfo", "LocalState", "Transport", "hmc_step", "isir_step", "latent_logdensity",
           "transport_maps", "with_grad"]
