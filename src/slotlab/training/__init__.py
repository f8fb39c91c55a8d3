"""Training with Lightning: modules, schedules, the experiment runner."""

from slotlab.training.base import SlotModule
from slotlab.training.object_discovery import ObjectDiscoveryModule
from slotlab.training.run import TrainResult, build_trainer, train
from slotlab.training.schedules import warmup_exponential_decay
from slotlab.training.set_prediction import SetPredictionModule

__all__ = ["ObjectDiscoveryModule", "SetPredictionModule", "SlotModule", "TrainResult", "build_trainer", "train", "warmup_exponential_decay"]
