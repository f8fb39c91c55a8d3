"""Whether the slots compete at all: two per-image numbers that tell a symmetric collapse (every slot attending every
input alike and ending up the same summary of the scene) from a model that binds, whatever the segmentation says.

An argmax segmentation hides such a collapse: with near-uniform attention, tiny differences still pick a winner per
pixel, so a collapsed model looks like "one slot holds the scene" (``merged_objects`` near 1).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def slot_collapse(attn: Tensor, slots: Tensor) -> dict[str, Tensor]:
    """attn [B, N, K] (softmax over the K slots, one iteration), slots [B, K, D] -> per image [B]:

    * ``attention_peak``: the largest slot's weight, averaged over the inputs: 1/K when every slot attends every
      input alike, 1 when each input belongs to one slot;
    * ``slot_similarity``: the mean cosine similarity between the different slots of an image: near 1 when the
      slots are copies of one vector.
    """
    k = slots.shape[1]
    peak = attn.float().max(dim=-1).values.mean(dim=-1)
    unit = F.normalize(slots.float(), dim=-1)
    cos = unit @ unit.transpose(1, 2)  # [B, K, K]
    similarity = (cos.sum(dim=(1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(dim=1)) / max(k * (k - 1), 1)
    return {"attention_peak": peak, "slot_similarity": similarity}
