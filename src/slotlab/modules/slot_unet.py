"""The LSD decoder: a diffusers ``UNet2DConditionModel`` that denoises latents, conditioned on slots through
cross-attention, with LSD's position embedding added before self- and cross-attention.

The official LSD code adds an embedding of the token grid to the normalised hidden states before both attentions
of every transformer block. Here that is an attention processor that adds the embedding to the query-side hidden
states, then runs diffusers' standard attention. Two kinds (``position_embedding``):

- ``"cartesian"`` (the official MOVi-E configuration): each attention owns a learned 1x1 projection of the
  pixel-centre grid ``(y, x, 1 - y, 1 - x)`` of its level to its width (:class:`CartesianEmbedding`).
- ``"learned"``: each transformer block owns a free embedding [1, h*w, C] shared by its two attentions.

The embeddings live on :class:`SlotConditionedUNet` (``pos_embeds``), so they are saved and optimised like any weight.
Under CPU autocast the attentions run in float32 (:class:`PositionalAttnProcessor`), the rest of the UNet in bf16.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from slotlab.modules.position import SoftPositionEmbedding

POSITION_EMBEDDINGS = ("cartesian", "learned", "none")


class CartesianEmbedding(SoftPositionEmbedding):
    """The soft position embedding of the pixel-centre grid ``(y, x, 1 - y, 1 - x)`` as tokens:
    () -> [1, side*side, channels], row-major like diffusers' token order."""

    def __init__(self, side: int, channels: int):
        super().__init__(channels, (side, side), pixel_centres=True)

    def forward(self) -> Tensor:  # type: ignore[override]  # a token table, not an embedding added to an input
        return self.embedding().flatten(2).transpose(1, 2)


class PositionalAttnProcessor:
    """Adds a position embedding to the hidden states, then runs diffusers' standard attention.

    Self-attention: queries, keys and values all see the embedding; cross-attention: the queries do (the keys and
    values are the slots). ``pos`` is a parameter [1, N, C], a module giving one, or None (no embedding). Not an
    ``nn.Module``: the embedding is owned by :class:`SlotConditionedUNet`. Under CPU autocast the attention runs in
    float32: PyTorch's CPU attention kernels are several times slower in bf16 than in float32 at the LSD demo's
    sizes, forward and backward, which made its bf16 training steps slower than float32 ones (docs/benchmarks.md).
    """

    def __init__(self, pos: nn.Parameter | nn.Module | None):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.pos = pos
        self.attention = AttnProcessor2_0()

    def __call__(
        self,
        attn,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args,
        **kwargs,
    ) -> Tensor:
        if self.pos is not None:
            pos = self.pos() if isinstance(self.pos, nn.Module) else self.pos
            hidden_states = hidden_states + pos.to(hidden_states.dtype)
        if hidden_states.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                context = None if encoder_hidden_states is None else encoder_hidden_states.float()
                return self.attention(attn, hidden_states.float(), context, attention_mask, temb)
        return self.attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class SlotConditionedUNet(nn.Module):
    """Noisy latents [B, C, h, w], timesteps [B], slots [B, K, cross_attention_dim] -> predicted noise.

    The first ``num_attention_levels`` resolution levels (and the middle block) use cross-attention blocks,
    the rest plain residual blocks; ``attention_heads`` is diffusers' ``attention_head_dim`` (the number of heads).
    ``position_embedding``: ``"cartesian"``, ``"learned"`` or ``"none"`` (``True``/``False`` read as learned/none).
    """

    def __init__(
        self,
        sample_size: int,
        latent_channels: int = 4,
        block_out_channels: Sequence[int] = (192, 384, 768, 768),
        layers_per_block: int = 2,
        num_attention_levels: int = 3,
        cross_attention_dim: int = 192,
        attention_heads: int = 8,
        norm_num_groups: int = 32,
        position_embedding: str | bool = "cartesian",
    ):
        super().__init__()
        from diffusers import UNet2DConditionModel
        from diffusers.models.attention_processor import Attention

        kind = position_embedding_kind(position_embedding)
        n = len(block_out_channels)
        down = tuple("CrossAttnDownBlock2D" if i < num_attention_levels else "DownBlock2D" for i in range(n))
        up = tuple(reversed(["CrossAttnUpBlock2D" if i < num_attention_levels else "UpBlock2D" for i in range(n)]))
        self.unet: Any = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=latent_channels,
            out_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=down,
            up_block_types=up,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_heads,
            norm_num_groups=norm_num_groups,
        )
        self.pos_embeds = nn.ParameterDict() if kind == "learned" else nn.ModuleDict()
        processors = {}
        for name, module in self.unet.named_modules():  # type: ignore[attr-defined]
            if not isinstance(module, Attention):
                continue
            side, width = sample_size // 2 ** _level(name, n), module.to_q.in_features
            pos: nn.Parameter | nn.Module | None = None
            if kind == "cartesian":  # one projection per attention
                pos = self.pos_embeds[name.replace(".", "_")] = CartesianEmbedding(side, width)
            elif kind == "learned":  # one embedding per transformer block: its attn1 and attn2 share it
                key = name.rsplit(".", 1)[0].replace(".", "_")
                if key not in self.pos_embeds:
                    self.pos_embeds[key] = nn.Parameter(torch.randn(1, side * side, width) * 0.02)  # type: ignore[assignment]
                pos = self.pos_embeds[key]
            processors[f"{name}.processor"] = PositionalAttnProcessor(pos)
        self.unet.set_attn_processor(processors)  # type: ignore[attr-defined]

    def forward(self, latents: Tensor, timesteps: Tensor, slots: Tensor) -> Tensor:
        return self.unet(latents, timesteps, encoder_hidden_states=slots).sample


def position_embedding_kind(value: str | bool) -> str:
    """``"cartesian"``, ``"learned"`` or ``"none"``; ``True``/``False`` (configs before the choice) = learned/none."""
    if isinstance(value, bool):
        return "learned" if value else "none"
    if value not in POSITION_EMBEDDINGS:
        raise ValueError(f"position_embedding must be one of {', '.join(POSITION_EMBEDDINGS)}, got {value!r}")
    return value


def _level(name: str, num_levels: int) -> int:
    """Resolution level (0 = full) of an attention layer from its module path."""
    part, index = name.split(".")[:2]
    if part == "down_blocks":
        return int(index)
    if part == "up_blocks":
        return num_levels - 1 - int(index)
    return num_levels - 1  # mid_block
