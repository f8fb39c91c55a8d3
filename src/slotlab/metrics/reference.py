"""Reference segmentations built from the ground truth, to read segmentation scores against.

A model's mBO or FG-ARI means more next to what simple, known segmentations of the same scenes score:

* :func:`voronoi_labels`: every object in its own segment, every background pixel given to its nearest object.
  This is a model that binds each object to one slot perfectly but splits the ground between the objects' slots.
  FG-ARI is 1 (it ignores the background), while mBO falls to the objects' share of their Voronoi cells.
* :func:`pooled_labels`: the ground truth averaged onto a coarse grid, upsampled bilinearly and argmaxed, the way
  attention masks on a ``grid x grid`` feature map become a segmentation. It bounds what such masks can reach.

Both take and give integer label maps ``[B, H, W]`` (0 = background), for :mod:`slotlab.metrics.segmentation`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

__all__ = ["pooled_labels", "voronoi_labels"]


def voronoi_labels(labels: Tensor) -> Tensor:
    """[B, H, W] -> [B, H, W]: background pixels take the label of the nearest object pixel (Euclidean);
    images without objects stay all background."""
    out = labels.clone()
    for i, image in enumerate(labels.cpu().numpy()):  # one distance transform per image
        if image.any():
            _, (rows, cols) = ndimage.distance_transform_edt(image == 0, return_indices=True)
            out[i] = torch.from_numpy(np.ascontiguousarray(image[rows, cols]))
    return out


def pooled_labels(labels: Tensor, grid: int) -> Tensor:
    """[B, H, W] -> [B, H, W]: the one-hot labels area-averaged onto ``grid x grid``, upsampled bilinearly to
    H x W and argmaxed (labels are re-indexed 0..L-1 internally and mapped back)."""
    values, index = torch.unique(labels, return_inverse=True)
    one_hot = F.one_hot(index.long(), len(values)).permute(0, 3, 1, 2).float()  # [B, L, H, W]
    coarse = F.adaptive_avg_pool2d(one_hot, grid)
    up = F.interpolate(coarse, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    # max's indices are argmax's (the first maximum), many times faster over a non-last dim on CPU
    return values[up.max(dim=1).indices]
