"""Training of energy-based models (Pyro): state, negatives (one function per method), trainer, checkpoints.

Example:
    >>> from ebmppl.pyro.training import EBMTrainer, TrainResult, TrainState
    >>> TrainResult._fields
    ('state', 'params', 'history')
"""

from ebmppl.pyro.training.checkpoint import load_checkpoint, save_checkpoint
from ebmppl.pyro.training.state import TrainResult, TrainState
from ebmppl.pyro.training.trainer import EBMTrainer

__all__ = ["EBMTrainer", "TrainResult", "TrainState", "load_checkpoint", "save_checkpoint"]
