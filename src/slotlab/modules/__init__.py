"""Building blocks: plain ``nn.Module``s, no training code."""

from slotlab.modules.decoders import BroadcastDecoderOutput, SpatialBroadcastDecoder
from slotlab.modules.encoders import CNNEncoder, conv_stack
from slotlab.modules.init import keras_init_
from slotlab.modules.invariant_slot_attention import InvariantSlotAttention, pose_dims
from slotlab.modules.position import RelativePositionEmbedding, SoftPositionEmbedding, build_grid
from slotlab.modules.slot_attention import SlotAttention, SlotAttentionOutput, SlotMLP
from slotlab.modules.slot_mlp import SlotMLPBaseline

__all__ = [
    "BroadcastDecoderOutput",
    "CNNEncoder",
    "InvariantSlotAttention",
    "RelativePositionEmbedding",
    "SlotAttention",
    "SlotAttentionOutput",
    "SlotMLP",
    "SlotMLPBaseline",
    "SoftPositionEmbedding",
    "SpatialBroadcastDecoder",
    "build_grid",
    "conv_stack",
    "keras_init_",
    "pose_dims",
]
