"""Models: compose modules, return typed outputs, save/load as safetensors + config.json (:mod:`.base`)."""

from slotlab.models.base import Sampling, SavedModel, SlotModel, attention_masks, mask_labels, resize_masks
from slotlab.models.object_discovery import (
    SlotAutoencoder,
    SlotAutoencoderConfig,
    SlotAutoencoderOutput,
)

__all__ = [
    "Sampling",
    "SavedModel",
    "SlotAutoencoder",
    "SlotAutoencoderConfig",
    "SlotAutoencoderOutput",
    "SlotModel",
    "attention_masks",
    "mask_labels",
    "resize_masks",
]
