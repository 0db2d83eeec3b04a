"""The Pyro (torch) backend of ebmppl."""

from ebmppl.pyro.kernels import FlowMCMC, WarmupSchedule
from ebmppl.pyro.potential import Potential
from ebmppl.pyro.training import EBMTrainer

__all__ = ["EBMTrainer", "FlowMCMC", "Potential", "WarmupSchedule"]
