"""Feature backbones for the LSD encoder: images -> [B, C, h, w] feature maps.

- :func:`conv_stack` (``slotlab.modules.encoders``): plain strided convs, small enough for a CPU.
- :class:`UNetBackbone`: the official LSD feature net, a stem conv (4x4, stride 4) followed by a diffusers
  ``UNet2DModel`` evaluated at timestep 0 (256 px -> 64x64x192 for MOVi-E).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class UNetBackbone(nn.Module):
    """Stem conv (kernel = stride = ``stem_stride``) + ``UNet2DModel`` at t = 0 -> [B, out_channels, R/s, R/s]."""

    def __init__(
        self,
        resolution: int,
        stem_channels: int = 64,
        stem_stride: int = 4,
        block_out_channels: Sequence[int] = (64, 128, 256, 256),
        layers_per_block: int = 2,
        out_channels: int = 192,
        norm_num_groups: int = 32,
        in_channels: int = 3,
    ):
        super().__init__()
        from diffusers import UNet2DModel

        if resolution % stem_stride:
            raise ValueError(f"resolution {resolution} is not divisible by the stem stride {stem_stride}")
        self.feature_size = resolution // stem_stride
        self.stem = nn.Conv2d(in_channels, stem_channels, stem_stride, stem_stride)
        n = len(block_out_channels)
        self.unet: Any = UNet2DModel(
            sample_size=self.feature_size,
            in_channels=stem_channels,
            out_channels=out_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n,
            norm_num_groups=norm_num_groups,
        )

    def forward(self, images: Tensor) -> Tensor:
        h = self.stem(images)
        t = torch.zeros(h.shape[0], device=h.device, dtype=torch.long)
        return self.unet(h, t).sample
