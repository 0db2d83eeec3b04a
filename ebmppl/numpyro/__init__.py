"""The NumPyro (JAX) backend of ebmppl."""

from ebmppl.numpyro.kernels import FlowMCMC, FlowMCMCState, WarmupSchedule
from ebmppl.numpyro.potential import Potential
from ebmppl.numpyro.training import EBMTrainer, TrainResult, TrainState, load_checkpoint, save_checkpoint

__all__ = ["EBMTrainer", "FlowMCMC", "FlowMCMCState", "Potential", "TrainResult", "TrainState", "WarmupSchedule",
           "load_checkpoint", "save_checkpoint"]
