"""Per-image reconstruction error of images in [-1, 1]: MSE and PSNR, over all pixels or a region.

Shapes: B batch, H x W pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def image_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """pred, target [B, C, H, W] -> MSE per image [B] (float32), over the pixels where ``mask`` [B, H, W] (bool)
    is True if given (NaN for an image whose mask is empty)."""
    err = (pred.float() - target.float()).square().mean(1)  # [B, H, W]
    if mask is None:
        return err.flatten(1).mean(1)
    mask = mask.to(err.device, torch.float32)
    return (err * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """PSNR per image [B] in dB of images in [-1, 1] (peak-to-peak 2): 10 log10(4 / MSE); see :func:`image_mse`."""
    return 10 * torch.log10(4.0 / image_mse(pred, target, mask).clamp_min(1e-10))
