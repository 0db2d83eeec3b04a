"""The NumPyro (JAX) backend of ebmppl."""

from ebmppl.numpyro.kernels import FlowMCMC, FlowMCMCState, NeuTraHMC, NeuTraHMCState, WarmupSchedule
from ebmppl.numpyro.partition import LogPartition, log_partition
from ebmppl.numpyro.potential import Potential
from ebmppl.numpyro.runs import load_potential
from ebmppl.numpyro.training import EBMTrainer, TrainResult, TrainState, load_checkpoint, save_checkpoint

__all__ = [
    "EBMTrainer", "FlowMCMC", "FlowMCMCState", "LogPartition", "NeuTraHMC", "NeuTraHMCState", "Potential", "TrainResult", "TrainState",
    "WarmupSchedule", "load_checkpoint", "load_potential", "log_partition", "save_checkpoint",
]
