"""Unsupervised object discovery: CNN encoder -> Slot Attention -> spatial broadcast decoder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor

from slotlab.fields import NonNegativeInt, PositiveFloat, PositiveInt
from slotlab.models.base import Sampling, SlotModel, resize_masks
from slotlab.models.common import SlotFrame, SlotInit, WeightInit, init_weights, slot_encoder
from slotlab.modules import BroadcastDecoderOutput, SlotAttentionOutput, SpatialBroadcastDecoder, pose_dims


@dataclass
class SlotAutoencoderConfig:
    """Everything that defines the architecture (saved as config.json beside the weights)."""

    resolution: PositiveInt = 128
    num_slots: PositiveInt = 7
    num_iterations: PositiveInt = 3
    eval_iterations: PositiveInt | None = None  # T in eval mode (validation, slotlab eval, inference); None: as trained
    slot_dim: PositiveInt = 64
    mlp_hidden: PositiveInt = 128
    slot_init: SlotInit = "gaussian"  # "gaussian" (paper) or "learned" (per-slot queries)
    implicit_grad: bool = False
    slot_heads: PositiveInt = 1  # multi-head Slot Attention (heads of width slot_dim / slot_heads); 1 in the paper
    # what groups the features into slots: Slot Attention, or the paper's Slot MLP baseline (no attention)
    grouping: Literal["slot_attention", "mlp"] = "slot_attention"
    slot_frame: SlotFrame = "none"  # Invariant Slot Attention: "translation" or "translation_scale" reference frames
    slot_scale_factor: PositiveFloat = 1.0  # with translation_scale: relative grid (grid - position) / (factor * scale)
    weight_init: WeightInit = (
        "keras"  # "keras": Glorot-uniform + zero bias, orthogonal GRU (official code); "torch": defaults
    )
    attn_eps: PositiveFloat = 1e-8
    ln_eps: PositiveFloat = 1e-3
    encoder_channels: list[PositiveInt] = field(default_factory=lambda: [64, 64, 64, 64])
    encoder_strides: list[PositiveInt] | None = None  # default: all 1
    encoder_kernel: PositiveInt = 5
    encoder_pos_frequencies: NonNegativeInt = 0  # Fourier bands added to the position grid (0: the official grid)
    decoder_broadcast: PositiveInt = 8
    decoder_channels: list[PositiveInt] = field(default_factory=lambda: [64, 64, 64, 64, 64])
    decoder_strides: list[PositiveInt] | None = field(default_factory=lambda: [2, 2, 2, 2, 1])
    decoder_kernel: PositiveInt = 5
    decoder_out_kernel: PositiveInt = 3
    decoder_pos_frequencies: NonNegativeInt = 0

    @property
    def slot_width(self) -> int:
        """Width of the slots the model gives and takes: slot_dim, plus the pose with a slot frame."""
        return self.slot_dim + pose_dims(self.slot_frame)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SlotAutoencoderOutput:
    reconstruction: Tensor  # [B, 3, H, W] in [-1, 1] space
    rgb: Tensor  # [B, K, 3, H, W] per-slot colours
    masks: Tensor  # [B, K, 1, H, W] alpha masks, softmax across slots
    slots: Tensor  # [B, K, D] ([B, K, D + P]: features and pose, with a slot frame)
    attn: Tensor  # [B, T, N, K] Slot Attention's attention per iteration (T + 1 rounds with a slot frame)
    loss: Tensor | None = None  # MSE to the input when asked for


class SlotAutoencoder(SlotModel, tags=["slot-attention"]):
    """The Slot Attention object discovery autoencoder. Images are [B, 3, H, W] scaled to [-1, 1]."""

    config_class = SlotAutoencoderConfig
    config: SlotAutoencoderConfig
    draws_images = True
    default_mask_source = "alpha"  # the paper segments with the decoder's alpha masks

    def __init__(self, config: SlotAutoencoderConfig):
        super().__init__(config)
        c = self.config
        self.encoder, self.slot_attention = slot_encoder(c)
        self.decoder = SpatialBroadcastDecoder(
            c.slot_dim,
            c.resolution,
            c.decoder_broadcast,
            c.decoder_channels,
            c.decoder_strides,
            c.decoder_kernel,
            c.decoder_out_kernel,
            c.decoder_pos_frequencies,
            pose_dims(c.slot_frame),
            c.slot_scale_factor,
        )
        init_weights(self, c.weight_init)

    def decode(self, slots: Tensor) -> BroadcastDecoderOutput:
        """slots [B, K, D] -> BroadcastDecoderOutput. Any slots may be decoded: edited, mixed, composed."""
        return self.decoder(slots)

    def render(
        self,
        slots: Tensor,
        sampling: Sampling | None = None,
        generator: torch.Generator | None = None,
        keep_from: Tensor | None = None,
        region: Tensor | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Tensor:
        """The decoder's reconstruction, clamped to [-1, 1] (deterministic: ``sampling`` and ``generator`` are not
        used); with ``keep_from`` and ``region``, pasted into ``keep_from`` inside the region."""
        images = self.decode(slots).reconstruction.clamp(-1, 1)
        if region is None or keep_from is None:
            return images
        return torch.where(region[:, None], images, keep_from)

    def slot_masks(self, enc: SlotAttentionOutput, size: int, source: str = "auto") -> Tensor:
        """ "alpha" (and "auto"): the broadcast decoder's alpha masks of the slots; "attention": the attention's."""
        if self.mask_source(source) == "alpha":
            return resize_masks(self.decode(enc.slots).alpha[:, :, 0].float(), size)
        return super().slot_masks(enc, size, source)

    def forward(
        self,
        images: Tensor,
        num_slots: int | None = None,
        num_iterations: int | None = None,
        generator: torch.Generator | None = None,
        return_loss: bool = True,
    ) -> SlotAutoencoderOutput:
        enc = self.encode(images, num_slots, num_iterations, generator)
        dec = self.decode(enc.slots)
        loss = torch.mean((dec.reconstruction.float() - images.float()) ** 2) if return_loss else None
        return SlotAutoencoderOutput(dec.reconstruction, dec.rgb, dec.alpha, enc.slots, enc.attn, loss)
