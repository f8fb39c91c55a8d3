"""Average precision of set predictions at distance thresholds (Slot Attention's CLEVR protocol).

Predictions and targets use the 19-dim layout ``xyz (3, scaled to [0, 1]) | size (2) | material (2) | shape (3) |
colour (8) | real object (1)``. All predicted slots of the evaluated set are ranked by their confidence, descending:
the real-object logit when given (a float32 sigmoid saturates at exactly 1.0 for logits >= 16.7, so ranking the
outputs would tie), else the real-object output; scores that still tie are ordered as the official code orders them,
``np.argsort(conf)[::-1]`` over the image-major flattened slots. For each in turn, the candidates are the real
ground-truth objects of the same image whose size, material, shape and colour argmaxes all equal the prediction's;
the nearest by ``|| (xyz_pred - xyz_true) * 6 ||`` is taken (the first on a tie). The prediction is a true positive
when that distance is below the threshold (any distance for ``inf``) and that object was not claimed by a higher-
ranked prediction; otherwise it is a false positive (there is no fall-back to the second nearest). Precision and
recall (over all real objects) accumulate down the ranking, and AP is the VOC all-point interpolated area under the
precision-recall curve.

Vectorised: the nearest candidate of every prediction is one [B, K, M] computation, and "claimed before" is
the first occurrence of each (image, object) key in rank order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

AP_THRESHOLDS: tuple[float, ...] = (math.inf, 1.0, 0.5, 0.25, 0.125)
_GROUPS = ((3, 5), (5, 7), (7, 10), (10, 18))  # size, material, shape, colour


def _split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., 19] -> xyz [..., 3], attribute argmaxes [..., 4]."""
    return x[..., :3], np.stack([x[..., a:b].argmax(-1) for a, b in _GROUPS], -1)


def nearest_matches(predictions, targets) -> tuple[np.ndarray, np.ndarray]:
    """For every prediction, the nearest same-attribute real object: (index [B, K] or -1, distance [B, K] or inf)."""
    p = np.asarray(torch.as_tensor(predictions).detach().double().cpu())
    t = np.asarray(torch.as_tensor(targets).detach().double().cpu())
    p_xyz, p_attr = _split(p)
    t_xyz, t_attr = _split(t)
    same = (p_attr[:, :, None] == t_attr[:, None]).all(-1) & (t[:, None, :, 18] != 0)  # [B, K, M]
    dist = np.linalg.norm((p_xyz[:, :, None] - t_xyz[:, None]) * 6.0, axis=-1)
    dist = np.where(same, dist, np.inf)
    best = dist.argmin(-1)
    best_dist = np.take_along_axis(dist, best[..., None], -1)[..., 0]
    return np.where(np.isfinite(best_dist), best, -1), best_dist


def voc_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP: area under the precision envelope at every change of recall."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    changes = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))


def average_precision(predictions, targets, threshold: float = math.inf, confidence=None) -> float:
    """AP of predictions [B, K, 19] against targets [B, M, 19] at one distance threshold (NaN: no real objects).
    ``confidence`` [B, K]: the ranking score (the real-object logits); default the real-object outputs."""
    t = np.asarray(torch.as_tensor(targets).detach().double().cpu())
    p = np.asarray(torch.as_tensor(predictions).detach().double().cpu())
    num_real = int((t[..., 18] != 0).sum())
    if num_real == 0:
        return math.nan
    best, dist = nearest_matches(p, t)
    b, k = best.shape
    conf = p[..., 18] if confidence is None else np.asarray(torch.as_tensor(confidence).detach().double().cpu())
    order = np.argsort(conf.reshape(-1))[::-1]  # the official ranking, ties included
    best, dist = best.reshape(-1)[order], dist.reshape(-1)[order]
    image = order // k
    hit = (best >= 0) & ((dist < threshold) if math.isfinite(threshold) else True)
    keys = image * t.shape[1] + best
    first = np.zeros(b * k, bool)
    hit_idx = np.flatnonzero(hit)
    _, first_of_key = np.unique(keys[hit_idx], return_index=True)
    first[hit_idx[first_of_key]] = True  # the highest-ranked claim of each object
    tp = np.cumsum(first)
    fp = np.cumsum(~first)
    return voc_average_precision(tp / (tp + fp), tp / num_real)


def ap_key(threshold: float) -> str:
    return "ap_inf" if math.isinf(threshold) else f"ap_{threshold:g}"


def average_precisions(predictions, targets, thresholds=AP_THRESHOLDS, confidence=None) -> dict[str, float]:
    """``{"ap_inf": ..., "ap_1": ..., "ap_0.5": ..., "ap_0.25": ..., "ap_0.125": ...}``."""
    return {ap_key(th): average_precision(predictions, targets, th, confidence) for th in thresholds}
