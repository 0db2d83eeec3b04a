"""The Pyro (torch) backend of ebmppl."""

from ebmppl.pyro.kernels import FlowMCMC, NeuTraHMC, WarmupSchedule
from ebmppl.pyro.partition import LogPartition, log_partition
from ebmppl.pyro.potential import Potential
from ebmppl.pyro.runs import load_potential
from ebmppl.pyro.training import EBMTrainer

__all__ = ["EBMTrainer", "FlowMCMC", "LogPartition", "NeuTraHMC", "Potential", "WarmupSchedule", "load_potential", "log_partition"]
