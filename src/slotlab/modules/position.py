"""Position embeddings over a 2-D grid of features."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def build_grid(height: int, width: int, device=None, dtype=None, pixel_centres: bool = False) -> Tensor:
    """[4, H, W] grid ``[y, x, 1 - y, 1 - x]`` with y, x from ``linspace(0, 1, res)`` (Slot Attention's official
    grid) or, with ``pixel_centres``, at the pixel centres ``(i + 0.5) / res`` (LSD's)."""
    if pixel_centres:
        y = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
        x = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    else:
        y = torch.linspace(0.0, 1.0, height, device=device, dtype=dtype)
        x = torch.linspace(0.0, 1.0, width, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([yy, xx, 1.0 - yy, 1.0 - xx])


def fourier_features(grid: Tensor, num_frequencies: int) -> Tensor:
    """[4, H, W] grid -> [4 + 4F, H, W]: the grid, then sin and cos of ``pi * 2**f * (y, x)`` for f < F.

    Raw coordinates make a network smooth in position (spectral bias); the extra bands let a decoder draw
    sharp edges early in training (Tancik et al. 2020). F = 0 is the official grid.
    """
    if num_frequencies == 0:
        return grid
    freqs = torch.pi * 2.0 ** torch.arange(num_frequencies, dtype=grid.dtype, device=grid.device)
    angles = torch.einsum("f,chw->fchw", freqs, grid[:2]).flatten(0, 1)  # [2F, H, W]
    return torch.cat([grid, angles.sin(), angles.cos()])


class SoftPositionEmbedding(nn.Module):
    """Adds ``Linear(grid)`` to channels-first features: [B, C, H, W] -> [B, C, H, W].

    ``num_frequencies`` > 0 adds Fourier bands of the grid (see :func:`fourier_features`); ``pixel_centres``
    places the grid at pixel centres (LSD) instead of ``linspace(0, 1)`` (Slot Attention).
    """

    def __init__(self, channels: int, resolution: tuple[int, int], num_frequencies: int = 0, pixel_centres: bool = False):
        super().__init__()
        self.proj = nn.Linear(4 + 4 * num_frequencies, channels)
        grid = build_grid(*resolution, pixel_centres=pixel_centres)
        self.register_buffer("grid", fourier_features(grid, num_frequencies), persistent=False)

    def embedding(self) -> Tensor:
        """[1, C, H, W] the embedding that is added."""
        return torch.einsum("ghw,cg->chw", self.grid, self.proj.weight).add(self.proj.bias[:, None, None])[None]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != self.grid.shape[-2:]:
            raise ValueError(f"feature map is {tuple(x.shape[-2:])}, position embedding built for {tuple(self.grid.shape[-2:])}")
        return x + self.embedding().to(x.dtype)
