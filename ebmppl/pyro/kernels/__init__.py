"""Markov kernels of the Pyro backend: a functional core and Pyro wrappers."""

from ebmppl.pyro.kernels.flow_mcmc import FlowMCMC
from ebmppl.pyro.kernels.neutra import NeuTraHMC
from ebmppl.schedule import WarmupSchedule

__all__ = ["FlowMCMC", "NeuTraHMC", "WarmupSchedule"]
