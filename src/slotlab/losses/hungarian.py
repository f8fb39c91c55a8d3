"""Hungarian-matched Huber loss for set prediction (Slot Attention's CLEVR property prediction).

Every prediction is compared with every target by a Huber loss (delta 1) averaged over features; per image the
optimal one-to-one matching of that cost (scipy's ``linear_sum_assignment``) picks the pairs; the loss is the
sum over matched pairs, averaged over the batch. Targets with fewer rows than slots are padded with zero rows
("no object"), so every slot is matched, as in the official code where targets are padded to the slot count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor


@dataclass
class HungarianMatch:
    loss: Tensor  # scalar: sum over matched pairs, mean over the batch
    pred_index: Tensor  # [B, K] slot indices, in target order
    target_index: Tensor  # [B, K] target indices matched to them
    cost: Tensor  # [B, K, K] pairwise cost (prediction x target), detached


def pairwise_huber(predictions: Tensor, targets: Tensor, delta: float = 1.0) -> Tensor:
    """[B, K, F] x [B, M, F] -> [B, K, M]: Huber loss of every prediction against every target, mean over F."""
    p = predictions[:, :, None].float()
    t = targets[:, None].float()
    return F.huber_loss(
        p.expand(-1, -1, t.shape[2], -1), t.expand(-1, p.shape[1], -1, -1), reduction="none", delta=delta
    ).mean(-1)


def match(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal assignment per image of a cost [B, K, M] (K >= M) -> row and column indices [B, M]."""
    rows = np.empty(cost.shape[:1] + cost.shape[2:], np.int64)
    cols = np.empty_like(rows)
    for b in range(cost.shape[0]):
        rows[b], cols[b] = linear_sum_assignment(cost[b])
    return rows, cols


def hungarian_huber_loss(predictions: Tensor, targets: Tensor, delta: float = 1.0) -> HungarianMatch:
    """predictions [B, K, F], targets [B, M, F] with M <= K (zero rows: no object)."""
    b, k, f = predictions.shape
    if targets.ndim != 3 or targets.shape[0] != b or targets.shape[2] != f or targets.shape[1] > k:
        raise ValueError(f"targets must be [{b}, M <= {k}, {f}], got {list(targets.shape)}")
    if targets.shape[1] < k:
        targets = F.pad(targets, (0, 0, 0, k - targets.shape[1]))
    cost = pairwise_huber(predictions, targets, delta)  # [B, K, K]
    rows, cols = match(cost.detach().cpu().numpy())
    rows_t = torch.as_tensor(rows, device=cost.device)
    cols_t = torch.as_tensor(cols, device=cost.device)
    matched = cost[torch.arange(b, device=cost.device)[:, None], rows_t, cols_t]  # [B, K]
    return HungarianMatch(matched.sum(1).mean(), rows_t, cols_t, cost.detach())
