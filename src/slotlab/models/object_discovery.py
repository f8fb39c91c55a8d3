"""Unsupervised object discovery: CNN encoder -> Slot Attention -> spatial broadcast decoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from slotlab.models.common import init_weights, slot_encoder
from slotlab.modules import SpatialBroadcastDecoder, pose_dims


@dataclass
class SlotAutoencoderConfig:
    """Everything that defines the architecture (saved as config.json beside the weights)."""

    resolution: int = 128
    num_slots: int = 7
    num_iterations: int = 3
    slot_dim: int = 64
    mlp_hidden: int = 128
    slot_init: str = "gaussian"  # "gaussian" (paper) or "learned" (per-slot queries)
    implicit_grad: bool = False
    slot_frame: str = "none"  # Invariant Slot Attention: "translation" or "translation_scale" reference frames
    slot_scale_factor: float = 1.0  # with translation_scale: relative grid (grid - position) / (factor * scale)
    weight_init: str = "keras"  # "keras": Glorot-uniform + zero bias, orthogonal GRU (official code); "torch": defaults
    attn_eps: float = 1e-8
    ln_eps: float = 1e-3
    encoder_channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
    encoder_strides: list[int] | None = None  # default: all 1
    encoder_kernel: int = 5
    encoder_pos_frequencies: int = 0  # Fourier bands added to the position grid (0: the official grid)
    decoder_broadcast: int = 8
    decoder_channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64, 64])
    decoder_strides: list[int] | None = field(default_factory=lambda: [2, 2, 2, 2, 1])
    decoder_kernel: int = 5
    decoder_out_kernel: int = 3
    decoder_pos_frequencies: int = 0

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


class SlotAutoencoder(nn.Module, PyTorchModelHubMixin, library_name="slotlab", tags=["object-centric", "slot-attention"]):
    """The Slot Attention object discovery autoencoder. Images are [B, 3, H, W] scaled to [-1, 1]."""

    def __init__(self, config: SlotAutoencoderConfig):
        super().__init__()
        if isinstance(config, dict):
            config = SlotAutoencoderConfig(**config)
        self.config = config
        c = config
        self.encoder, self.slot_attention = slot_encoder(c)
        self.decoder = SpatialBroadcastDecoder(
            c.slot_dim, c.resolution, c.decoder_broadcast, c.decoder_channels, c.decoder_strides,
            c.decoder_kernel, c.decoder_out_kernel, c.decoder_pos_frequencies, pose_dims(c.slot_frame),
            c.slot_scale_factor,
        )
        init_weights(self, c.weight_init)

    @property
    def feature_size(self) -> int:
        """Side of the feature grid that Slot Attention attends over."""
        return self.encoder.feature_size

    def encode(self, images: Tensor, num_slots: int | None = None, num_iterations: int | None = None,
               generator: torch.Generator | None = None):
        """images [B, 3, H, W] -> SlotAttentionOutput (slots [B, K, D], attn [B, T, N, K])."""
        self._check_images(images)
        return self.slot_attention(self.encoder(images), num_slots, num_iterations, generator=generator)

    def decode(self, slots: Tensor):
        """slots [B, K, D] -> BroadcastDecoderOutput. Any slots may be decoded: edited, mixed, composed."""
        return self.decoder(slots)

    def forward(self, images: Tensor, num_slots: int | None = None, num_iterations: int | None = None,
                generator: torch.Generator | None = None, return_loss: bool = True) -> SlotAutoencoderOutput:
        enc = self.encode(images, num_slots, num_iterations, generator)
        dec = self.decode(enc.slots)
        loss = torch.mean((dec.reconstruction.float() - images.float()) ** 2) if return_loss else None
        return SlotAutoencoderOutput(dec.reconstruction, dec.rgb, dec.alpha, enc.slots, enc.attn, loss)

    def _check_images(self, images: Tensor) -> None:
        r = self.config.resolution
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (r, r):
            raise ValueError(f"expected images [B, 3, {r}, {r}], got {list(images.shape)}")
