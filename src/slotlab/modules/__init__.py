"""Building blocks: plain ``nn.Module``s, no training code."""

from slotlab.modules.decoders import BroadcastDecoderOutput, SpatialBroadcastDecoder
from slotlab.modules.encoders import CNNEncoder, conv_stack
from slotlab.modules.init import keras_init_
from slotlab.modules.position import SoftPositionEmbedding, build_grid
from slotlab.modules.slot_attention import SlotAttention, SlotAttentionOutput, SlotMLP

__all__ = [
    "BroadcastDecoderOutput",
    "CNNEncoder",
    "SlotAttention",
    "SlotAttentionOutput",
    "SlotMLP",
    "SoftPositionEmbedding",
    "SpatialBroadcastDecoder",
    "build_grid",
    "conv_stack",
    "keras_init_",
]
