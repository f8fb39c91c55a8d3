"""Models: compose modules, return typed outputs, save/load as safetensors + config.json."""

from slotlab.models.object_discovery import (
    SlotAutoencoder,
    SlotAutoencoderConfig,
    SlotAutoencoderOutput,
)

__all__ = ["SlotAutoencoder", "SlotAutoencoderConfig", "SlotAutoencoderOutput"]
