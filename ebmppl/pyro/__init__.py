"""The Pyro (torch) backend of ebmppl."""

from ebmppl.pyro.kernels import FlowMCMC, WarmupSchedule
from ebmppl.pyro.potential import Potential

__all__ = ["FlowMCMC", "Potential", "WarmupSchedule"]
