"""Adjusted Rand Index (ARI) and foreground ARI (FG-ARI) for object discovery.

Conventions (shared by the whole project):

* ARI is computed **per image** on hard (argmax) labels, in float64, and then
  averaged over images.
* FG-ARI ignores pixels whose *ground-truth* label is 0 (background); the
  predicted labels keep all slots (a slot that covers background and
  foreground is not removed).
* When both labellings agree on every pair of pixels (e.g. one foreground
  object captured whole by one slot, all pixels in one cluster in both, or a
  single pixel) the ARI is 1.0. This is scikit-learn's convention; DeepMind's
  TensorFlow code returns NaN for those cases.
* An image with no pixels to score (no foreground pixels for FG-ARI) gets NaN
  and is skipped when averaging (:func:`mean_ignoring_nan`).

Per image the result equals ``sklearn.metrics.adjusted_rand_score`` on the
scored pixels. Everything is vectorised over the batch (one ``bincount`` over
``B * num_true * num_pred`` bins builds all contingency tables), and works on
CPU and CUDA tensors of any integer dtype.

Public API:

* :func:`adjusted_rand_index` -- core, label maps in, float64 ``[B]`` out.
* :func:`to_labels` -- masks ``[B, K, H, W]`` -> argmax label maps ``[B, H, W]``.
* :func:`ari_score` -- label maps or masks in, per-image float64 ``[B]`` out.
* :func:`ari`, :func:`fg_ari` -- shorthands for :func:`ari_score`.
* :func:`mean_ignoring_nan` -- average of per-image scores, skipping NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "adjusted_rand_index",
    "ari",
    "ari_score",
    "fg_ari",
    "mean_ignoring_nan",
    "to_labels",
]


def _check_labels(x: Tensor, name: str) -> None:
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer label tensor, got dtype {x.dtype}")


def _num_classes(x: Tensor, given: int | None, name: str, arg: str) -> int:
    """Number of label values ``max + 1`` (validated against ``given``)."""
    if given is not None and given < 1:
        raise ValueError(f"{arg} must be >= 1, got {given}")
    if x.numel() == 0:
        return 1 if given is None else int(given)
    lo, hi = (int(v) for v in torch.aminmax(x))
    if lo < 0:
        raise ValueError(f"{name} must be non-negative, got minimum {lo}")
    if given is None:
        return hi + 1
    if hi >= given:
        raise ValueError(f"{name} contains label {hi} but {arg}={given}")
    return int(given)


def adjusted_rand_index(
    true_labels: Tensor,
    pred_labels: Tensor,
    *,
    ignore_background: bool = False,
    num_true: int | None = None,
    num_pred: int | None = None,
) -> Tensor:
    """Per-image Adjusted Rand Index between two batches of label maps.

    Args:
        true_labels: integer ``[B, N]`` or ``[B, H, W]`` (any trailing shape,
            flattened internally) ground-truth labels, non-negative.
        pred_labels: integer tensor of the same shape: predicted labels
            (e.g. argmax slot index), non-negative.
        ignore_background: if True (FG-ARI), pixels whose *true* label is 0
            are excluded; predictions keep all their labels.
        num_true, num_pred: number of distinct label values (labels must be
            ``< num``). Inferred as ``max + 1`` when not given (this reads the
            maximum back from the device).

    Returns:
        float64 ``[B]``: ARI per image, equal to
        ``sklearn.metrics.adjusted_rand_score`` on the scored pixels; 1.0 when
        both labellings induce the same pairwise relation (zero denominator);
        NaN for images with no pixels to score.
    """
    _check_labels(true_labels, "true_labels")
    _check_labels(pred_labels, "pred_labels")
    if true_labels.shape != pred_labels.shape:
        raise ValueError(
            f"shape mismatch: true_labels {tuple(true_labels.shape)} vs pred_labels {tuple(pred_labels.shape)}"
        )
    if true_labels.dim() < 2:
        raise ValueError(f"expected labels [B, N] or [B, H, W], got shape {tuple(true_labels.shape)}")
    if true_labels.device != pred_labels.device:
        raise ValueError("true_labels and pred_labels must be on the same device")

    batch = true_labels.shape[0]
    device = true_labels.device
    # flatten(1) rather than reshape(batch, -1) so that B == 0 works
    true = true_labels.flatten(1).long()
    pred = pred_labels.flatten(1).long()
    n_true = _num_classes(true, num_true, "true_labels", "num_true")
    n_pred = _num_classes(pred, num_pred, "pred_labels", "num_pred")

    # Contingency tables for all images at once: combined index of
    # (image, true label, pred label); excluded pixels go to one extra bin.
    cells = n_true * n_pred
    offsets = torch.arange(batch, device=device).unsqueeze(1) * cells
    index = offsets + true * n_pred + pred
    if ignore_background:
        index = torch.where(true == 0, torch.full_like(index, batch * cells), index)
    counts = torch.bincount(index.reshape(-1), minlength=batch * cells + 1)
    table = counts[: batch * cells].view(batch, n_true, n_pred)  # int64 [B, T, P]

    # Pair-confusion counts over ordered pairs of distinct pixels (exact in
    # int64), as in sklearn.metrics.pair_confusion_matrix.
    n = table.sum(dim=(1, 2))
    sum_sq = table.square().sum(dim=(1, 2))
    row_sq = table.sum(dim=2).square().sum(dim=1)
    col_sq = table.sum(dim=1).square().sum(dim=1)
    tp = sum_sq - n  # same cluster in both
    fp = col_sq - sum_sq  # same predicted cluster, different true cluster
    fn = row_sq - sum_sq  # same true cluster, different predicted cluster
    tn = n.square() - row_sq - col_sq + sum_sq  # different in both

    tp, fp, fn, tn = (t.double() for t in (tp, fp, fn, tn))
    # ARI = 2 (tp tn - fn fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn)),
    # algebraically equal to (index - expected) / (max - expected). The
    # denominator is zero exactly when fn == fp == 0 (full pairwise agreement).
    numerator = 2.0 * (tp * tn - fn * fp)
    denominator = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    agree = (fn == 0) & (fp == 0)
    safe = torch.where(agree, torch.ones_like(denominator), denominator)
    result = torch.where(agree, torch.ones_like(numerator), numerator / safe)
    return torch.where(n == 0, torch.full_like(result, math.nan), result)


def to_labels(x: Tensor) -> Tensor:
    """Convert masks to label maps.

    Args:
        x: either masks ``[B, K, H, W]`` (one-hot or soft; float, bool or any
            integer dtype), converted by argmax over ``K`` (first maximum wins
            on ties), or integer label maps ``[B, H, W]`` / ``[B, N]``,
            returned unchanged.

    Returns:
        integer label maps ``[B, H, W]`` (or ``[B, N]`` for a ``[B, N]`` input).
    """
    if x.dim() == 4:
        if x.dtype == torch.bool:
            x = x.to(torch.uint8)
        # max's indices are argmax's (the first maximum), many times faster over a non-last dim on CPU
        return x.max(dim=1).indices
    if x.dim() in (2, 3):
        _check_labels(x, "label map")
        return x
    raise ValueError(f"expected masks [B, K, H, W] or label maps [B, H, W] / [B, N], got shape {tuple(x.shape)}")


def ari_score(true: Tensor, pred: Tensor, *, foreground_only: bool) -> Tensor:
    """Per-image (FG-)ARI from label maps or masks.

    Args:
        true: ground truth, label map ``[B, H, W]`` (int, 0 = background) or
            masks ``[B, K, H, W]`` (channel 0 = background after argmax).
        pred: prediction, label map ``[B, H, W]`` or masks ``[B, K, H, W]``
            (e.g. slot attention masks; argmax over slots).
        foreground_only: True for FG-ARI (ignore true-background pixels).

    Returns:
        float64 ``[B]`` per-image score; NaN where there is nothing to score.
    """
    return adjusted_rand_index(to_labels(true), to_labels(pred), ignore_background=foreground_only)


def ari(true: Tensor, pred: Tensor) -> Tensor:
    """Per-image ARI over all pixels; see :func:`ari_score`. float64 ``[B]``."""
    return ari_score(true, pred, foreground_only=False)


def fg_ari(true: Tensor, pred: Tensor) -> Tensor:
    """Per-image FG-ARI (true label 0 ignored); see :func:`ari_score`. float64 ``[B]``."""
    return ari_score(true, pred, foreground_only=True)


def mean_ignoring_nan(per_image: Tensor) -> float:
    """Mean of per-image scores ``[B]`` skipping NaN (skipped images).

    Returns NaN if every entry is NaN (or the input is empty).
    """
    values = per_image.detach().double().reshape(-1)
    values = values[~torch.isnan(values)]
    if values.numel() == 0:
        return math.nan
    return float(values.mean())
