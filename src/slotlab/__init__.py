"""slotlab: object-centric learning with Slot Attention and Latent Slot Diffusion."""

from slotlab.models import SlotAutoencoder, SlotAutoencoderConfig, SlotAutoencoderOutput
from slotlab.modules import SlotAttention, SlotAttentionOutput

__version__ = "0.1.0"

__all__ = ["SlotAttention", "SlotAttentionOutput", "SlotAutoencoder", "SlotAutoencoderConfig", "SlotAutoencoderOutput"]
