"""Markov kernels of the NumPyro backend: a functional core and NumPyro wrappers."""

from ebmppl.numpyro.kernels.flow_mcmc import FlowMCMC, FlowMCMCState
from ebmppl.numpyro.kernels.neutra import NeuTraHMC, NeuTraHMCState
from ebmppl.schedule import WarmupSchedule

__all__ = ["FlowMCMC", "FlowMCMCState", "NeuTraHMC", "NeuTraHMCState", "WarmupSchedule"]
