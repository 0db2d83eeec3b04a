"""The NumPyro (JAX) backend of ebmppl."""

from ebmppl.numpyro.kernels import FlowMCMC, FlowMCMCState, WarmupSchedule
from ebmppl.numpyro.potential import Potential

__all__ = ["FlowMCMC", "FlowMCMCState", "Potential", "WarmupSchedule"]
