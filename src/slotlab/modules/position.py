"""Position embeddings over a 2-D grid of features."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def build_grid(height: int, width: int, device=None, dtype=None) -> Tensor:
    """[4, H, W] grid ``[y, x, 1 - y, 1 - x]`` with y, x from ``linspace(0, 1, res)`` (the official grid)."""
    y = torch.linspace(0.0, 1.0, height, device=device, dtype=dtype)
    x = torch.linspace(0.0, 1.0, width, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([yy, xx, 1.0 - yy, 1.0 - xx])


class SoftPositionEmbedding(nn.Module):
    """Adds ``Linear(grid)`` to channels-first features: [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, channels: int, resolution: tuple[int, int]):
        super().__init__()
        self.proj = nn.Linear(4, channels)
        self.register_buffer("grid", build_grid(*resolution), persistent=False)

    def embedding(self) -> Tensor:
        """[1, C, H, W] the embedding that is added."""
        return torch.einsum("ghw,cg->chw", self.grid, self.proj.weight).add(self.proj.bias[:, None, None])[None]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != self.grid.shape[-2:]:
            raise ValueError(f"feature map is {tuple(x.shape[-2:])}, position embedding built for {tuple(self.grid.shape[-2:])}")
        return x + self.embedding().to(x.dtype)
