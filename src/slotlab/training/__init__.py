"""Training with Lightning: a Lightning module per model kind (shared base), the optim/trainer config sections,
the LR schedule, precision probing, and the trainer with its callbacks. :func:`slotlab.experiment.train` runs them."""

from slotlab.training.base import SlotModule
from slotlab.training.config import OptimConfig, TrainerConfig
from slotlab.training.object_discovery import ObjectDiscoveryModule
from slotlab.training.schedules import warmup_exponential_decay
from slotlab.training.set_prediction import SetPredictionModule
from slotlab.training.trainer import build_trainer

__all__ = [
    "ObjectDiscoveryModule",
    "OptimConfig",
    "SetPredictionModule",
    "SlotModule",
    "TrainerConfig",
    "build_trainer",
    "warmup_exponential_decay",
]
