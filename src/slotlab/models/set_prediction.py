"""Supervised set prediction: CNN encoder -> Slot Attention -> per-slot MLP head with sigmoid outputs.

Each slot predicts one object in the 19-dim layout of the CLEVR targets (see
:func:`slotlab.data.formats.clevr.scene_targets`): ``(xyz + 3) / 6`` (3) | size (2) | material (2) |
shape (3) | colour (8) | "real object" (1), every output through a sigmoid as in the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from slotlab.models.common import init_weights, slot_encoder
from slotlab.modules import pose_dims


@dataclass
class SlotSetPredictorConfig:
    """Everything that defines the architecture (saved as config.json beside the weights)."""

    resolution: int = 128
    num_slots: int = 10
    num_iterations: int = 3
    slot_dim: int = 64
    mlp_hidden: int = 128
    slot_init: str = "gaussian"
    implicit_grad: bool = False
    slot_frame: str = "none"  # Invariant Slot Attention: "translation" or "translation_scale" reference frames
    slot_scale_factor: float = 1.0  # with translation_scale: relative grid (grid - position) / (factor * scale)
    weight_init: str = "keras"
    attn_eps: float = 1e-8
    ln_eps: float = 1e-3
    encoder_channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
    encoder_strides: list[int] | None = field(default_factory=lambda: [1, 2, 2, 1])  # 128 px -> 32x32 features
    encoder_kernel: int = 5
    encoder_pos_frequencies: int = 0
    head_hidden: int = 64
    num_outputs: int = 19

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


class SlotSetPredictor(nn.Module, PyTorchModelHubMixin, library_name="slotlab", tags=["object-centric", "slot-attention"]):
    """Predicts the set of objects in an image. Images are [B, 3, H, W] scaled to [-1, 1]."""

    def __init__(self, config: SlotSetPredictorConfig):
        super().__init__()
        if isinstance(config, dict):
            config = SlotSetPredictorConfig(**config)
        self.config = c = config
        self.encoder, self.slot_attention = slot_encoder(c)
        self.head = nn.Sequential(nn.Linear(c.slot_width, c.head_hidden), nn.ReLU(inplace=True),
                                  nn.Linear(c.head_hidden, c.num_outputs))
        init_weights(self, c.weight_init)

    @property
    def feature_size(self) -> int:
        return self.encoder.feature_size

    def forward(self, images: Tensor, targets: Tensor | None = None, num_slots: int | None = None,
                num_iterations: int | None = None, generator: torch.Generator | None = None) -> SetPredictionOutput:
        """images [B, 3, R, R], optional targets [B, M, F] (M <= K, zero rows = no object)."""
        from slotlab.losses import hungarian_huber_loss

        r = self.config.resolution
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (r, r):
            raise ValueError(f"expected images [B, 3, {r}, {r}], got {list(images.shape)}")
        enc = self.slot_attention(self.encoder(images), num_slots, num_iterations, generator=generator)
        predictions = torch.sigmoid(self.head(enc.slots).float())
        loss = None if targets is None else hungarian_huber_loss(predictions, targets).loss
        return SetPredictionOutput(predictions, enc.slots, enc.attn, loss)
