"""Vectorised image and mask preparation: crop, resize, label maps, value scaling."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slotlab.errors import DataError


def _crop(x: Tensor, crop: list[int] | None) -> Tensor:
    if crop is None:
        return x
    top, left, height, width = crop
    if top + height > x.shape[-2] or left + width > x.shape[-1]:
        raise DataError(f"crop {crop} does not fit images of size {tuple(x.shape[-2:])}")
    return x[..., top : top + height, left : left + width]


def prepare_images(
    images: np.ndarray | Tensor, crop: list[int] | None, resolution: int, chunk: int = 4096, antialias: bool = False
) -> Tensor:
    """uint8 [N, H, W, 3] -> uint8 [N, 3, R, R]: crop, then bilinear resize (by default without antialiasing, as
    tf.image.resize in the papers' pipelines; ``antialias`` for large downscales such as FFHQ 1024 -> 256)."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise DataError(f"images must be uint8 [N, H, W, 3], got {x.dtype} {list(x.shape)}")
    x = _crop(x.permute(0, 3, 1, 2), crop)
    if x.shape[-2:] == (resolution, resolution):
        return x.contiguous()
    out = torch.empty(x.shape[0], 3, resolution, resolution, dtype=torch.uint8)
    for i in range(0, x.shape[0], chunk):
        y = F.interpolate(
            x[i : i + chunk].float(),
            size=(resolution, resolution),
            mode="bilinear",
            align_corners=False,
            antialias=antialias,
        )
        out[i : i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def masks_to_labels(mask: np.ndarray | Tensor) -> Tensor:
    """Ground-truth masks -> uint8 label maps [N, H, W] (0 = background).

    Accepts label maps [N, H, W], one-hot masks [N, K, H, W] (entity 0 = background) or DeepMind's
    [N, K, H, W, 1] layout.
    """
    m = torch.as_tensor(mask)
    if m.ndim == 5 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim == 4:
        # max's indices are argmax's (the first maximum), many times faster over a non-last dim on CPU
        return (m.to(torch.uint8) if m.dtype == torch.bool else m).max(dim=1).indices.to(torch.uint8)
    if m.ndim == 3:
        if m.dtype.is_floating_point or m.dtype == torch.bool:
            raise DataError(f"label map must hold integers in 0..255, got {m.dtype}")
        if m.numel() and (int(m.min()) < 0 or int(m.max()) > 255):
            raise DataError(f"label map values must be in 0..255, found {int(m.min())}..{int(m.max())} (out of range)")
        return m.to(torch.uint8)
    raise DataError(f"mask must be a label map [N, H, W] or one-hot [N, K, H, W], got shape {list(m.shape)}")


def prepare_labels(labels: Tensor, crop: list[int] | None, resolution: int) -> Tensor:
    """uint8 [N, H, W] -> [N, R, R]: the same crop as the images, nearest-neighbour resize."""
    x = _crop(labels, crop)
    if x.shape[-2:] == (resolution, resolution):
        return x.contiguous()
    # nearest-exact: the source pixel under each target pixel's centre, aligned with the images' pixel-centred
    # bilinear resize (PyTorch's legacy "nearest" takes floor(i * scale) and sits up to a pixel off)
    return F.interpolate(x[:, None].float(), size=(resolution, resolution), mode="nearest-exact")[:, 0].to(torch.uint8)


def to_model_range(images: Tensor) -> Tensor:
    """uint8 [.., 3, H, W] -> float in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> Tensor:
    """float in [-1, 1] -> uint8 (values outside are clipped)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def stack_images(
    images: list[np.ndarray], crop: list[int] | None, resolution: int, antialias: bool = False
) -> np.ndarray:
    """Images of any sizes, uint8 [H, W, C] (C = 1, 3 or 4: grey is repeated, alpha dropped) -> uint8
    [N, 3, R, R]: ``crop``, or without one each image's largest centred square, then resized (images of one size
    together)."""
    out = np.empty((len(images), 3, resolution, resolution), np.uint8)
    shapes = np.array([a.shape for a in images])
    for shape in np.unique(shapes, axis=0):
        idx = np.flatnonzero((shapes == shape).all(1))
        x = np.stack([images[i] for i in idx])
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        elif x.shape[-1] == 4:
            x = x[..., :3]
        h, w = x.shape[1:3]
        square = crop if crop is not None or h == w else centre_crop(h, w, min(h, w))  # never stretched
        out[idx] = prepare_images(x, square, resolution, antialias=antialias).numpy()
    return out


def centre_crop(height: int, width: int, side: int) -> list[int]:
    """[top, left, side, side]: a centred square crop from a ``height`` x ``width`` image, rounded as torchvision's
    ``center_crop`` (``round((height - side) / 2)``, half to even): 35 -> 32 takes rows and columns 2:34, as the
    reference code's Tetrominoes crop."""
    return [round((height - side) / 2.0), round((width - side) / 2.0), side, side]
