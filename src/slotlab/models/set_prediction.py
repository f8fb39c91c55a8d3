"""Supervised set prediction: CNN encoder -> Slot Attention -> per-slot MLP head with sigmoid outputs.

Each slot predicts one object in the 19-dim layout of the CLEVR targets (see
:func:`slotlab.data.formats.clevr.scene_targets`): ``(xyz + 3) / 6`` (3) | size (2) | material (2) |
shape (3) | colour (8) | "real object" (1), every output through a sigmoid as in the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from slotlab.fields import NonNegativeInt, PositiveFloat, PositiveInt
from slotlab.models.base import SlotModel
from slotlab.models.common import SlotFrame, SlotInit, WeightInit, init_weights, slot_encoder
from slotlab.modules import pose_dims


@dataclass
class SlotSetPredictorConfig:
    """Everything that defines the architecture (saved as config.json beside the weights)."""

    resolution: PositiveInt = 128
    num_slots: PositiveInt = 10
    num_iterations: PositiveInt = 3
    eval_iterations: PositiveInt | None = None  # T in eval mode (validation, slotlab eval, inference); None: as trained
    slot_dim: PositiveInt = 64
    mlp_hidden: PositiveInt = 128
    slot_init: SlotInit = "gaussian"
    implicit_grad: bool = False
    slot_heads: PositiveInt = 1  # multi-head Slot Attention (heads of width slot_dim / slot_heads); 1 in the paper
    # what groups the features into slots: Slot Attention, or the paper's Slot MLP baseline (no attention)
    grouping: Literal["slot_attention", "mlp"] = "slot_attention"
    slot_frame: SlotFrame = "none"  # Invariant Slot Attention: "translation" or "translation_scale" reference frames
    slot_scale_factor: PositiveFloat = 1.0  # with translation_scale: relative grid (grid - position) / (factor * scale)
    weight_init: WeightInit = "keras"
    attn_eps: PositiveFloat = 1e-8
    ln_eps: PositiveFloat = 1e-3
    encoder_channels: list[PositiveInt] = field(default_factory=lambda: [64, 64, 64, 64])
    encoder_strides: list[PositiveInt] | None = field(default_factory=lambda: [1, 2, 2, 1])  # 128 px -> 32x32 features
    encoder_kernel: PositiveInt = 5
    encoder_pos_frequencies: NonNegativeInt = 0
    head_hidden: PositiveInt = 64
    num_outputs: PositiveInt = 19

    @property
    def slot_width(self) -> int:
        """Width of the slots the model gives and takes: slot_dim, plus the pose with a slot frame."""
        return self.slot_dim + pose_dims(self.slot_frame)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SetPredictionOutput:
    predictions: Tensor  # [B, K, F] in (0, 1), one object per slot
    slots: Tensor  # [B, K, D]
    attn: Tensor  # [B, T, N, K] Slot Attention's attention per iteration
    loss: Tensor | None = None  # Hungarian Huber loss when targets are given
    logits: Tensor | None = None  # [B, K, F] before the sigmoid (the real-object logit ranks predictions for AP)


class SlotSetPredictor(SlotModel, tags=["slot-attention"]):
    """Predicts the set of objects in an image. Images are [B, 3, H, W] scaled to [-1, 1]."""

    config_class = SlotSetPredictorConfig
    config: SlotSetPredictorConfig

    def __init__(self, config: SlotSetPredictorConfig):
        super().__init__(config)
        c = self.config
        self.encoder, self.slot_attention = slot_encoder(c)
        self.head = nn.Sequential(
            nn.Linear(c.slot_width, c.head_hidden), nn.ReLU(inplace=True), nn.Linear(c.head_hidden, c.num_outputs)
        )
        init_weights(self, c.weight_init)

    def decode(self, slots: Tensor) -> Tensor:
        """slots [B, K, D] -> predictions [B, K, F] in (0, 1): one object per slot (sigmoid of the head)."""
        return torch.sigmoid(self.head(slots).float())

    def forward(
        self,
        images: Tensor,
        targets: Tensor | None = None,
        num_slots: int | None = None,
        num_iterations: int | None = None,
        generator: torch.Generator | None = None,
    ) -> SetPredictionOutput:
        """images [B, 3, R, R], optional targets [B, M, F] (M <= K, zero rows = no object)."""
        from slotlab.losses import hungarian_huber_loss

        enc = self.encode(images, num_slots, num_iterations, generator)
        logits = self.head(enc.slots).float()
        predictions = torch.sigmoid(logits)
        loss = None if targets is None else hungarian_huber_loss(predictions, targets).loss
        return SetPredictionOutput(predictions, enc.slots, enc.attn, loss, logits)
