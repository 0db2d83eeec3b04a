"""Markov kernels of the NumPyro backend: a functional core and NumPyro wrappers."""

from ebmppl.numpyro.kernels.flow_mcmc import FlowMCMC, FlowMCMCState
from ebmppl.schedule import WarmupSchedule

__all__ = ["FlowMCMC", "FlowMCMCState", "WarmupSchedule"]
