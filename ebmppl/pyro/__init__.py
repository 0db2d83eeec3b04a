"""The Pyro (torch) backend of ebmppl."""

from ebmppl.pyro.kernels import FlowMCMC, NeuTraHMC, WarmupSchedule
from ebmppl.partition import LogPartition
from ebmppl.pyro.partition import log_evidence, log_partition
from ebmppl.pyro.potential import Potential
from ebmppl.pyro.training import EBMTrainer, TrainResult, TrainState

__all__ = [
    "EBMTrainer", "FlowMCMC", "LogPartition", "NeuTraHMC", "Potential", "TrainResult", "TrainState", "WarmupSchedule",
    "load_potential", "log_evidence", "log_partition",
]


def __getattr__(name: str):
    """``load_potential`` is imported on first use: it lives in :mod:`ebmppl.app.pyro_run`, which imports this package."""
    if name == "load_potential":
        from ebmppl.app.pyro_run import load_potential

        globals()[name] = load_potential
        return load_potential
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
