"""Property probing: how much of each object's ground-truth factors (position, shape, colour, ...) can be read out
of the slot that represents it.

1. :func:`collect_probe_data` runs a slot model over a dataset with label maps and per-entity factor arrays,
   turns the last Slot Attention iteration into per-slot masks (:func:`slot_masks_from_attention`), matches slots
   to ground-truth objects by Hungarian matching on IoU (:func:`match_slots_to_objects`) and keeps, for every
   matched object, its slot vector and its factors.
2. :func:`train_probes` splits the objects (seeded, 83 % / 17 % by default), standardises the slot vectors with
   the training split's statistics and fits one probe per property: softmax regression (a linear probe) for
   categorical factors, scored by test accuracy against chance (the majority class rate of the test split); a
   small MLP for continuous factors, scored by test MSE (in the factor's units, averaged over its channels)
   against predicting the training mean.

Which factor arrays are probed and how is decided by name (:data:`FACTOR_KINDS`): ``color``, ``material``,
``shape`` and ``size`` are categorical (one code per entity: CLEVR's uint8 vocabulary codes, Tetrominoes' and
Multi-dSprites' shape indices; classes are the distinct values seen on matched objects), and ``x``, ``y``, ``z``,
``rotation``, ``scale``, ``orientation`` and ``pixel_coords`` are continuous. A categorical name whose array has
channels per entity (Tetrominoes' and Multi-dSprites' RGB ``color`` [E, C]) is probed as continuous. Other arrays
(``visibility``, set-prediction ``targets``, ...) and absent factors are skipped. Angles are probed as plain
numbers (no wrap-around).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from tqdm.auto import tqdm

from slotlab.data.datasets import SceneDataset, SequentialBatchSampler
from slotlab.errors import DataError
from slotlab.models import SlotModel, attention_masks

CATEGORICAL, CONTINUOUS = "categorical", "continuous"

#: Per-entity factor arrays that can be probed, by name; a categorical name with channels is continuous.
FACTOR_KINDS: dict[str, str] = {
    "color": CATEGORICAL,
    "material": CATEGORICAL,
    "shape": CATEGORICAL,
    "size": CATEGORICAL,
    "x": CONTINUOUS,
    "y": CONTINUOUS,
    "z": CONTINUOUS,
    "rotation": CONTINUOUS,
    "scale": CONTINUOUS,
    "orientation": CONTINUOUS,
    "pixel_coords": CONTINUOUS,
}


# ------------------------------------------------------------------------------------------------ matching


def slot_masks_from_attention(attn: Tensor, size: int) -> Tensor:
    """Last-iteration attention [B, N, K] (N = side * side) -> soft per-slot masks [B, K, size, size]
    (:func:`slotlab.models.attention_masks`, which segmentation and editing use too)."""
    return attention_masks(attn, size)


def mask_ious(true_labels: Tensor, slot_masks: Tensor, num_entities: int) -> Tensor:
    """IoU [B, E, K] between each entity's pixels (label == e) and each slot's pixels (argmax over slots)."""
    k = slot_masks.shape[1]
    gt = F.one_hot(true_labels.flatten(1).long(), num_entities).float()  # [B, HW, E]
    pred = F.one_hot(slot_masks.flatten(2).float().argmax(dim=1), k).float()  # [B, HW, K]
    inter = gt.transpose(1, 2) @ pred  # [B, E, K]
    union = gt.sum(1)[:, :, None] + pred.sum(1)[:, None, :] - inter
    return inter / union.clamp_min(1)


def match_slots_to_objects(
    true_labels: Tensor, slot_masks: Tensor, num_entities: int | None = None, min_iou: float = 0.0
) -> Tensor:
    """Hungarian matching of ground-truth objects to slots, per image, maximising the total IoU.

    Args:
        true_labels: [B, H, W] integer label maps, 0 = background, e = entity e.
        slot_masks: [B, K, H, W] soft or hard slot masks; each pixel goes to its argmax slot.
        num_entities: E, the number of entities including the background (default: the largest label + 1).
        min_iou: a matched pair with IoU <= this is dropped (by default pairs that share no pixel).

    Returns:
        int64 [B, E]: the slot of each entity, -1 for the background (column 0), entities absent from the image,
        entities left over when there are more objects than slots, and matches of IoU <= ``min_iou``.
    """
    if (
        true_labels.ndim != 3
        or slot_masks.ndim != 4
        or true_labels.shape[0] != slot_masks.shape[0]
        or true_labels.shape[-2:] != slot_masks.shape[-2:]
    ):
        raise ValueError(
            f"expected labels [B, H, W] and slot masks [B, K, H, W], got {list(true_labels.shape)} and "
            f"{list(slot_masks.shape)}"
        )
    largest = int(true_labels.max()) if true_labels.numel() else 0
    num_entities = largest + 1 if num_entities is None else num_entities
    if largest >= num_entities:
        raise ValueError(f"label {largest} is out of range for {num_entities} entities")
    iou = mask_ious(true_labels.cpu(), slot_masks.cpu(), num_entities).numpy()  # [B, E, K]
    present = (
        np.stack([np.bincount(y.ravel(), minlength=num_entities) > 0 for y in true_labels.cpu().long().numpy()])
        if len(iou)
        else np.zeros((0, num_entities), bool)
    )
    present[:, 0] = False  # the background is never matched
    assignment = np.full(iou.shape[:2], -1, np.int64)
    for b in range(len(iou)):
        rows = np.flatnonzero(present[b])
        if len(rows) == 0:
            continue
        r, c = linear_sum_assignment(iou[b, rows], maximize=True)
        keep = iou[b, rows[r], c] > min_iou
        assignment[b, rows[r[keep]]] = c[keep]
    return torch.from_numpy(assignment)


# ------------------------------------------------------------------------------------------------ data


def probe_factors(dataset: SceneDataset, properties: list[str] | None = None) -> dict[str, str]:
    """The dataset's probeable per-entity factors, name -> kind, in :data:`FACTOR_KINDS` order (``properties``
    restricts them; an unknown or absent name is a DataError)."""
    found = {}
    for name, kind in FACTOR_KINDS.items():
        a = dataset.extra.get(name)
        if a is None or a.ndim < 2 or np.dtype(a.dtype).kind not in "biuf":
            continue
        found[name] = CONTINUOUS if a.ndim > 2 else kind
    if properties is not None:
        missing = [p for p in properties if p not in found]
        if missing:
            raise DataError(
                f"no per-object factor {', '.join(map(repr, missing))} to probe; the data has "
                f"{', '.join(found) or 'none'}"
            )
        found = {p: found[p] for p in properties}
    return found


@torch.no_grad()
def collect_probe_data(
    model: nn.Module,
    dataset: SceneDataset,
    batch_size: int = 64,
    seed: int = 0,
    properties: list[str] | None = None,
    progress: bool = False,
) -> dict:
    """Run ``model`` over ``dataset``, match slots to objects and gather what the probes train on.

    Returns a dict with ``slots`` float [M, D] (the matched slot of each of the M matched objects),
    ``targets`` {name: int64 [M] class indices (categorical) or float [M] / [M, C] (continuous)},
    ``kinds`` {name: "categorical" | "continuous"}, ``classes`` {name: float [num classes], the factor value of
    each class index}, ``num_images``, ``num_objects`` (objects visible in the label maps) and ``num_matched`` (M).
    Slot initialisation noise comes from a generator seeded with ``seed``.
    """
    if not isinstance(model, SlotModel):
        raise DataError(f"a {type(model).__name__} has no slots to probe")
    if dataset.labels is None:
        raise DataError("the data has no masks, so slots cannot be matched to objects")
    kinds = probe_factors(dataset, properties)
    if not kinds:
        raise DataError("the data has no per-object factor arrays to probe (x, y, shape, color, ...)")
    entities = {dataset.extra[name].shape[1] for name in kinds}
    if len(entities) != 1:
        raise DataError(f"the factor arrays disagree on the number of entities: {sorted(entities)}")
    num_entities = entities.pop()
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    slots: list[Tensor] = []
    values: dict[str, list[Tensor]] = {name: [] for name in kinds}
    num_objects = 0
    for idx in tqdm(SequentialBatchSampler(len(dataset), batch_size), desc="probe", disable=not progress, leave=False):
        batch = dataset[idx]
        labels = batch["labels"].long()
        if int(labels.max()) >= num_entities:
            raise DataError(f"label {int(labels.max())} has no factors: the factor arrays have {num_entities} entities")
        enc = model.encode(batch["image"].to(device), generator=g)
        masks = model.slot_masks(enc, labels.shape[-1], "attention").cpu()  # [B, K, H, W]
        assignment = match_slots_to_objects(labels, masks, num_entities)  # [B, E]
        num_objects += sum(int(torch.unique(y).gt(0).sum()) for y in labels)
        b, e = torch.nonzero(assignment >= 0, as_tuple=True)
        slots.append(enc.slots.float().cpu()[b, assignment[b, e]])
        for name in kinds:
            values[name].append(batch[name][b, e])
    data: dict[str, Any] = {
        "slots": torch.cat(slots),
        "targets": {},
        "kinds": kinds,
        "classes": {},
        "num_images": len(dataset),
        "num_objects": num_objects,
    }
    data["num_matched"] = len(data["slots"])
    for name, kind in kinds.items():
        v = torch.cat(values[name])
        if kind == CATEGORICAL:
            data["classes"][name], data["targets"][name] = torch.unique(v.double().round(), return_inverse=True)
        else:
            data["targets"][name] = v.float()
    return data


# ------------------------------------------------------------------------------------------------ probes


def split_objects(num: int, train_fraction: float = 0.83, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A seeded permutation of ``num`` objects cut into (train indices, test indices), both non-empty."""
    if num < 2:
        raise DataError(f"{num} matched objects are too few to train and test a probe")
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    n_train = min(max(round(num * train_fraction), 1), num - 1)
    return perm[:n_train], perm[n_train:]


def _fit(
    probe: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn,
    epochs: int,
    lr: float,
    weight_decay: float,
    val_fraction: float,
    seed: int,
) -> nn.Module:
    """Full-batch Adam on all but a seeded ``val_fraction`` of (x, y); returns the probe with the weights of the
    epoch with the lowest loss on that held-out part (early stopping, so probes of noise stay near chance)."""
    n_val = min(round(len(x) * val_fraction), len(x) - 1)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1))
    fit, val = perm[n_val:], perm[:n_val]
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state = math.inf, None
    for _ in range(epochs):
        if n_val:
            with torch.no_grad():
                val_loss = loss_fn(probe(x[val]), y[val]).item()
            if val_loss < best:
                best, best_state = val_loss, {k: v.clone() for k, v in probe.state_dict().items()}
        opt.zero_grad(set_to_none=True)
        loss_fn(probe(x[fit]), y[fit]).backward()
        opt.step()
    if n_val:
        with torch.no_grad():
            if loss_fn(probe(x[val]), y[val]).item() >= best:
                probe.load_state_dict(best_state or {})
    return probe.eval()


def train_probes(
    data: dict,
    train_fraction: float = 0.83,
    seed: int = 0,
    epochs: int = 300,
    lr: float = 1e-2,
    hidden: int = 64,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.1,
) -> dict[str, dict]:
    """Fit and score one probe per property of ``data`` (from :func:`collect_probe_data`; only ``slots``,
    ``targets`` and ``kinds`` are read).

    Categorical: Linear(D, classes) trained with cross-entropy; ``value`` = test accuracy, ``baseline`` = the
    majority class rate of the test split. Continuous: Linear(D, hidden) ReLU Linear(hidden, C) on standardised
    targets; ``value`` = test MSE in the factor's units (mean over channels), ``baseline`` = the test MSE of the
    training mean. Features are standardised with the training split's mean and std; weights are initialised
    from ``seed``. Probes train full-batch with Adam for up to ``epochs`` steps on the training split less a
    seeded ``val_fraction`` of it, which picks the step to keep (early stopping; 0 turns it off).

    Returns {name: {"kind", "metric": "accuracy" | "mse", "value", "baseline", "train_objects", "test_objects"}}.
    """
    x = data["slots"].float()
    train, test = split_objects(len(x), train_fraction, seed)
    mean, std = x[train].mean(0), x[train].std(0, unbiased=False).clamp_min(1e-6)
    x = (x - mean) / std
    d = x.shape[1]
    results = {}
    for name, kind in data["kinds"].items():
        y = data["targets"][name]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if kind == CATEGORICAL:
                y = y.long()
                probe = _fit(
                    nn.Linear(d, int(y.max()) + 1),
                    x[train],
                    y[train],
                    F.cross_entropy,
                    epochs,
                    lr,
                    weight_decay,
                    val_fraction,
                    seed,
                )
                with torch.no_grad():
                    value = (probe(x[test]).argmax(1) == y[test]).float().mean().item()
                baseline = torch.bincount(y[test]).max().item() / len(test)
                metric = "accuracy"
            else:
                y = y.float().reshape(len(y), -1)  # [M, C]
                y_mean, y_std = y[train].mean(0), y[train].std(0, unbiased=False).clamp_min(1e-6)
                mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, y.shape[1]))
                probe = _fit(
                    mlp, x[train], (y[train] - y_mean) / y_std, F.mse_loss, epochs, lr, weight_decay, val_fraction, seed
                )
                with torch.no_grad():
                    pred = probe(x[test]) * y_std + y_mean
                value = F.mse_loss(pred, y[test]).item()
                baseline = F.mse_loss(y_mean.expand_as(y[test]), y[test]).item()
                metric = "mse"
        results[name] = {
            "kind": kind,
            "metric": metric,
            "value": value,
            "baseline": baseline,
            "train_objects": len(train),
            "test_objects": len(test),
        }
    return results
