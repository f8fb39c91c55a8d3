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


def position_grid(side: int, device=None, dtype=None) -> Tensor:
    """[side * side, 2] (y, x) of a square grid in row-major order: the cell centres ``(2 i + 1) / side - 1``
    of a ``side`` x ``side`` grid laid over the image, so [-1, 1] spans the image whatever the grid's size.

    A coordinate therefore names the same place on an encoder's 16 x 16 feature map and a decoder's 8 x 8
    broadcast grid (``linspace(-1, 1)`` would not: its ends move with the grid size), up to a constant offset
    the convolutions absorb."""
    t = (torch.arange(side, device=device, dtype=dtype) * 2 + 1) / side - 1
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([yy, xx], dim=-1).reshape(-1, 2)


def relative_grid(grid: Tensor, positions: Tensor, scales: Tensor | None, scale_factor: float = 1.0) -> Tensor:
    """grid [N, 2], positions [B, K, 2], scales [B, K, 2] or None -> [B, K, N, 2]: the grid in each slot's frame,
    ``(grid - position) / (scale_factor * scale)``. ``scale_factor`` (ISA's ``scales_factor``) keeps the
    coordinates moderate when scales are small."""
    rel = grid[None, None] - positions[:, :, None]
    return rel if scales is None else rel / (scale_factor * scales[:, :, None])


class SoftPositionEmbedding(nn.Module):
    """Adds ``Linear(grid)`` to channels-first features: [B, C, H, W] -> [B, C, H, W].

    ``num_frequencies`` > 0 adds Fourier bands of the grid (see :func:`fourier_features`); ``pixel_centres``
    places the grid at pixel centres (LSD) instead of ``linspace(0, 1)`` (Slot Attention).
    """

    grid: Tensor

    def __init__(
        self, channels: int, resolution: tuple[int, int], num_frequencies: int = 0, pixel_centres: bool = False
    ):
        super().__init__()
        self.proj = nn.Linear(4 + 4 * num_frequencies, channels)
        grid = build_grid(*resolution, pixel_centres=pixel_centres)
        self.register_buffer("grid", fourier_features(grid, num_frequencies), persistent=False)

    def embedding(self) -> Tensor:
        """[1, C, H, W] the embedding that is added."""
        return torch.einsum("ghw,cg->chw", self.grid, self.proj.weight).add(self.proj.bias[:, None, None])[None]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != self.grid.shape[-2:]:
            raise ValueError(
                f"feature map is {tuple(x.shape[-2:])}, position embedding built for {tuple(self.grid.shape[-2:])}"
            )
        return x + self.embedding().to(x.dtype)


class RelativePositionEmbedding(nn.Module):
    """Adds ``Linear(grid in each slot's frame)`` to broadcast slots (Invariant Slot Attention's decoder).

    x [B, K, C, S, S] (each slot tiled to an S x S grid), positions [B, K, 2], scales [B, K, 2] or None ->
    [B, K, C, S, S]. The grid is :func:`position_grid`, as :class:`slotlab.modules.InvariantSlotAttention`'s, and
    ``scale_factor`` must be the module's. Scales (which edits may set) are clipped below at ``min_scale``.
    """

    grid: Tensor

    def __init__(self, channels: int, size: int, scale_factor: float = 1.0, min_scale: float = 0.001):
        super().__init__()
        self.size, self.scale_factor, self.min_scale = size, scale_factor, min_scale
        self.proj = nn.Linear(2, channels)
        self.register_buffer("grid", position_grid(size), persistent=False)

    def forward(self, x: Tensor, positions: Tensor, scales: Tensor | None = None) -> Tensor:
        b, k, c, s, _ = x.shape
        if s != self.size:
            raise ValueError(f"broadcast grid is {s}x{s}, position embedding built for {self.size}x{self.size}")
        scales = None if scales is None else scales.float().clamp_min(self.min_scale)
        rel = relative_grid(
            self.grid, positions.float(), scales, self.scale_factor
        )  # in float32, then in the layer's dtype
        emb = self.proj(rel.to(self.proj.weight.dtype))
        return x + emb.transpose(2, 3).reshape(b, k, c, s, s).to(x.dtype)  # [B, K, N, C] -> [B, K, C, S, S]
