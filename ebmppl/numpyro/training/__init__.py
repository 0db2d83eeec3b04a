"""Training of energy-based models (NumPyro): state, negatives (one function per method), trainer, checkpoints.

Example:
    >>> from ebmppl.numpyro.training import EBMTrainer, TrainResult, TrainState
    >>> TrainResult._fields
    ('state', 'params', 'history')
"""

from ebmppl.numpyro.training.checkpoint import load_checkpoint, save_checkpoint
from ebmppl.numpyro.training.state import TrainResult, TrainState
from ebmppl.numpyro.training.trainer import EBMTrainer

__all__ = ["EBMTrainer", "TrainResult", "TrainState", "load_checkpoint", "save_checkpoint"]
