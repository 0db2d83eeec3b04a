"""The NumPyro (JAX) backend of ebmppl."""

from ebmppl.numpyro.kernels import FlowMCMC, FlowMCMCState, NeuTraHMC, NeuTraHMCState, WarmupSchedule
from ebmppl.partition import LogPartition
from ebmppl.numpyro.partition import log_evidence, log_partition
from ebmppl.numpyro.potential import Potential
from ebmppl.numpyro.training import EBMTrainer, TrainResult, TrainState

__all__ = [
    "EBMTrainer", "FlowMCMC", "FlowMCMCState", "LogPartition", "NeuTraHMC", "NeuTraHMCState", "Potential", "TrainResult", "TrainState",
    "WarmupSchedule", "load_potential", "log_evidence", "log_partition",
]


def __getattr__(name: str):
    """``load_potential`` is imported on first use: it lives in :mod:`ebmppl.app.numpyro_run`, which imports this package."""
    if name == "load_potential":
        from ebmppl.app.numpyro_run import load_potential

        globals()[name] = load_potential
        return load_potential
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
