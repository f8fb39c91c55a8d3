"""Segmentation metrics for object discovery: mean best overlap (mBO) and matched mIoU.

Conventions (BRIEF section 5):

* Inputs are integer label maps ``true`` ``[B, H, W]`` (0 = background, objects
  ``1..M``; ids need not be contiguous, e.g. MOVi instance ids) and ``pred``
  ``[B, H, W]`` (argmax slot index ``0..K-1``). Masks ``[B, K, H, W]`` are
  accepted too and converted by argmax (:func:`slotlab.metrics.ari.to_labels`).
* Objects are the non-zero true labels present in an image; background is never
  scored. Every predicted segment counts, including the slot that covers the
  background (its background pixels enlarge the union).
* mBO: per object, the best IoU over all predicted masks.
* mIoU: Hungarian matching (maximising total IoU) between objects and predicted
  masks; objects left unmatched (more objects than masks) score 0.
* Two averages are reported: ``*_objects`` averages over all objects of the
  dataset (the LSD paper's convention), ``*_images`` averages per image first
  and then over images with at least one object (most frameworks'). Images
  without objects are skipped in both.

All IoUs of a batch come from one ``bincount`` over (image, true label, pred
label) triples; only the Hungarian matching loops over images (scipy, on CPU).

Public API:

* :func:`iou_table` -- float64 ``[B, T, P]`` IoUs and a ``[B, T]`` object mask.
* :func:`best_overlap`, :func:`matched_iou` -- ``(per_object [N], per_image [B])``.
* :func:`segmentation_metrics` -- dict of the four averages and ``num_objects`` of one batch.
* :func:`binding_errors` -- why a segmentation scores low: objects split over slots, objects sharing a slot, how
  much of the stray pixels went to slots that own no object, and how much ground the objects' slots hold;
  :func:`summarise_binding` averages it over batches.
* :class:`SegmentationMetric` -- the one accumulator (a torchmetrics ``Metric``): FG-ARI, ARI, mBO, mIoU and the
  binding diagnostics over many batches, exact, reduced across DDP ranks.
"""

from __future__ import annotations

import math

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from slotlab.metrics.ari import _check_labels, _num_classes, ari_score, mean_ignoring_nan, to_labels

__all__ = [
    "SegmentationMetric",
    "best_overlap",
    "binding_errors",
    "iou_table",
    "matched_iou",
    "segmentation_metrics",
    "summarise_binding",
]


def contingency(true: Tensor, pred: Tensor, num_pred: int | None = None) -> Tensor:
    """int64 ``[B, T, P]``: pixels of each image with true label ``t`` and predicted label ``p``
    (``T = max(true) + 1``, ``P = num_pred`` or ``max(pred) + 1``), from one ``bincount``."""
    true, pred = to_labels(true), to_labels(pred)
    _check_labels(true, "true")
    _check_labels(pred, "pred")
    if true.shape != pred.shape:
        raise ValueError(f"shape mismatch: true {tuple(true.shape)} vs pred {tuple(pred.shape)}")
    if true.dim() < 2:
        raise ValueError(f"expected label maps [B, H, W] or [B, N], got shape {tuple(true.shape)}")
    if true.device != pred.device:
        raise ValueError("true and pred must be on the same device")

    batch, device = true.shape[0], true.device
    t = true.flatten(1).long()  # [B, N]
    p = pred.flatten(1).long()  # [B, N]
    n_true = _num_classes(t, None, "true", "num_true")
    n_pred = _num_classes(p, num_pred, "pred", "num_pred")
    cells = n_true * n_pred
    offsets = torch.arange(batch, device=device).unsqueeze(1) * cells  # [B, 1]
    index = (offsets + t * n_pred + p).reshape(-1)  # [B * N]
    return torch.bincount(index, minlength=batch * cells).view(batch, n_true, n_pred)


def iou_table(true: Tensor, pred: Tensor) -> tuple[Tensor, Tensor]:
    """IoU between every true label and every predicted label, per image.

    Args:
        true: integer ``[B, H, W]`` (or ``[B, N]``) ground-truth labels, 0 = background;
            or masks ``[B, K, H, W]``.
        pred: integer label map of the same shape (slot index), or masks
            ``[B, K, H, W]``.

    Returns:
        ``iou``: float64 ``[B, T, P]``, ``T = max(true) + 1``, ``P = max(pred) + 1``:
        ``iou[b, t, p] = |true==t & pred==p| / |true==t | pred==p|`` (0 if the union
        is empty). ``objects``: bool ``[B, T]``, True where label ``t > 0`` occurs in
        image ``b``.
    """
    inter = contingency(true, pred)  # int64 [B, T, P] intersections
    area_t = inter.sum(dim=2)  # [B, T]
    area_p = inter.sum(dim=1)  # [B, P]
    union = area_t.unsqueeze(2) + area_p.unsqueeze(1) - inter  # [B, T, P]
    iou = inter.double() / union.clamp(min=1).double()
    objects = area_t > 0
    objects[:, 0] = False  # background is not an object
    return iou, objects


def _summarise(scores: Tensor, objects: Tensor) -> tuple[Tensor, Tensor]:
    """Scores ``[B, T]`` -> per-object ``[N]`` (image-major, label ascending) and
    per-image means ``[B]`` (NaN for images without objects)."""
    per_object = scores[objects]
    kept = torch.where(objects, scores, torch.zeros_like(scores))
    per_image = kept.sum(dim=1) / objects.sum(dim=1).double()  # 0 / 0 -> NaN
    return per_object, per_image


def best_overlap(true: Tensor, pred: Tensor) -> tuple[Tensor, Tensor]:
    """Best overlap (mBO): per object, the highest IoU over all predicted masks.

    Args:
        true: ground-truth labels ``[B, H, W]`` (0 = background); see :func:`iou_table`.
        pred: predicted labels ``[B, H, W]`` (slot index).

    Returns:
        ``per_object``: float64 ``[N]`` over the ``N`` objects of the batch
        (image-major, label ascending); ``per_image``: float64 ``[B]`` mean over each
        image's objects, NaN for images without objects. Both on the input device.
    """
    iou, objects = iou_table(true, pred)
    return _summarise(iou.amax(dim=2), objects)


MATCHINGS = ("oclf", "lsd")


def matched_iou(
    true: Tensor, pred: Tensor, matching: str = "oclf", num_pred: int | None = None
) -> tuple[Tensor, Tensor]:
    """Hungarian-matched IoU (mIoU): objects matched one-to-one to predicted masks, by one of two protocols.

    - ``"oclf"`` (the object-centric-learning framework's): the matching maximises the total IoU of each image;
      objects left without a mask (more objects than masks) score 0.
    - ``"lsd"`` (the official LSD evaluation's): the matching minimises the cosine distance between the flattened
      one-hot masks, the background and absent objects taking part at cost 10000; objects left unmatched (fewer
      masks than objects) are dropped, not scored 0. The score of a pair is still its IoU.

    ``num_pred``: the number of predicted masks (slots), when some own no pixel (default ``max(pred) + 1``).

    Args / Returns: as :func:`best_overlap` (per-object scores of dropped objects are left out).
    """
    if matching not in MATCHINGS:
        raise ValueError(f"unknown mIoU matching {matching!r}: use one of {', '.join(MATCHINGS)}")
    inter = contingency(true, pred, num_pred)  # [B, T, P]
    area_t, area_p = inter.sum(dim=2), inter.sum(dim=1)
    union = area_t.unsqueeze(2) + area_p.unsqueeze(1) - inter
    iou = (inter.double() / union.clamp(min=1).double()).cpu()
    objects = (area_t > 0).cpu()
    objects[:, 0] = False  # background is not an object
    matched = torch.full(objects.shape, math.nan if matching == "lsd" else 0.0, dtype=torch.float64)  # [B, T]
    if matching == "lsd":
        norm = (area_t.unsqueeze(2) * area_p.unsqueeze(1)).double().sqrt()
        cost = (1 - inter.double() / norm.clamp(min=1e-12)).cpu()
        cost[~objects] = 10000.0  # background and absent objects: matched last, never scored
    for b in range(iou.shape[0]):
        rows = objects[b].nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        if matching == "oclf":
            sub = iou[b, rows].numpy()  # [objects, P]
            r, c = linear_sum_assignment(sub, maximize=True)
            matched[b, rows[torch.as_tensor(r)]] = torch.as_tensor(sub[r, c], dtype=torch.float64)
        else:
            r, c = linear_sum_assignment(cost[b].numpy())
            keep = objects[b, torch.as_tensor(r)].numpy()
            r, c = r[keep], c[keep]
            matched[b, torch.as_tensor(r)] = iou[b, torch.as_tensor(r), torch.as_tensor(c)]
    per_object, per_image = _summarise_present(matched, objects)
    return per_object.to(true.device), per_image.to(true.device)


def _summarise_present(scores: Tensor, objects: Tensor) -> tuple[Tensor, Tensor]:
    """As :func:`_summarise`, leaving out objects whose score is NaN (dropped)."""
    scored = objects & ~torch.isnan(scores)
    per_object = scores[scored]
    kept = torch.where(scored, scores, torch.zeros_like(scores))
    per_image = kept.sum(dim=1) / scored.sum(dim=1).double()  # 0 / 0 -> NaN
    return per_object, per_image


def _mean(x: Tensor) -> float:
    """Mean of a 1-D tensor ignoring NaN; NaN if nothing is left."""
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else math.nan


def segmentation_metrics(true: Tensor, pred: Tensor, matching: str = "oclf") -> dict[str, float]:
    """mBO and mIoU of one batch, averaged over objects and over images.

    Args:
        true: ground-truth labels ``[B, H, W]`` (0 = background).
        pred: predicted labels ``[B, H, W]`` (slot index).

    Returns:
        ``{"mbo_objects", "mbo_images", "miou_objects", "miou_images", "num_objects"}``:
        ``*_objects`` average over all objects (LSD paper); ``*_images`` average the per-image means over
        images that have at least one object (NaN if no objects were seen). :class:`SegmentationMetric`
        accumulates them (and FG-ARI and the binding diagnostics) over several batches.
    """
    metric = SegmentationMetric(fg_ari=False, binding=False, matching=matching)
    metric.update(true, pred)
    return metric.compute()


def binding_errors(true: Tensor, pred: Tensor, threshold: float = 0.9) -> dict[str, Tensor]:
    """How objects and slots bind, per object of the batch (image-major, label ascending).

    Each object's *owner* is the predicted label holding most of its pixels. Returns float64/bool ``[N]``:

    * ``purity``: the fraction of the object's pixels in its owner;
    * ``split``: purity below ``threshold``;
    * ``merged``: the owner is also the owner of another object of the image;
    * ``stray``: pixels of the object outside its owner, and ``stray_to_spare``: those of them in slots that own no
      object (a spare slot drawing part of an object, rather than a neighbour's slot);
    * ``owner_ground``: the fraction of the owner's pixels that are background (a slot holding its object plus a
      share of the ground: what keeps mBO low when the ground is split between the objects' slots).
    """
    inter = contingency(true, pred)  # [B, T, P]
    area = inter.sum(dim=2)  # [B, T]
    objects = area > 0
    objects[:, 0] = False
    held, owner = inter.max(dim=2)  # [B, T]
    n_pred = inter.shape[2]
    owned = torch.zeros(inter.shape[0], n_pred, dtype=torch.long, device=inter.device)  # objects each slot owns
    owned.scatter_add_(1, owner, objects.long())
    merged = owned.gather(1, owner) > 1
    spare = owned == 0  # [B, P]
    stray = area - held
    stray_to_spare = (inter * spare[:, None, :]).sum(dim=2)
    purity = held.double() / area.clamp(min=1).double()
    owner_size = inter.sum(dim=1).gather(1, owner)  # [B, T]
    owner_ground = inter[:, 0, :].gather(1, owner).double() / owner_size.clamp(min=1).double()
    return {
        "purity": purity[objects],
        "split": (purity < threshold)[objects],
        "merged": merged[objects],
        "stray": stray[objects],
        "stray_to_spare": stray_to_spare[objects],
        "owner_ground": owner_ground[objects],
    }


def summarise_binding(parts: list[dict[str, Tensor]]) -> dict[str, float]:
    """Averages over all objects of :func:`binding_errors` results of several batches: ``object_purity``,
    ``split_objects``, ``merged_objects``, ``owner_ground`` and ``stray_to_spare`` (share of all stray pixels);
    empty if there were no objects."""
    b = {k: torch.cat([part[k] for part in parts]) for k in parts[0]} if parts else {}
    if not b or not b["purity"].numel():
        return {}
    return {
        "object_purity": float(b["purity"].mean()),
        "split_objects": float(b["split"].double().mean()),
        "merged_objects": float(b["merged"].double().mean()),
        "owner_ground": float(b["owner_ground"].mean()),
        "stray_to_spare": float(b["stray_to_spare"].sum() / b["stray"].sum().clamp(min=1)),
    }


BINDING_FIELDS = ("purity", "split", "merged", "stray", "stray_to_spare", "owner_ground")
OVERLAP_FIELDS = ("mbo_objects", "mbo_images", "miou_objects", "miou_images")


class SegmentationMetric(Metric):
    """The segmentation accumulator: FG-ARI (and ARI) averaged over images, mBO and mIoU over objects and over
    images, and the binding diagnostics (:func:`binding_errors`, averaged as :func:`summarise_binding`), of label
    maps added batch by batch. Exact over the whole data (every per-image and per-object score is kept, so the
    result equals one call on all images at once) and reduced across DDP ranks by torchmetrics (concatenation).

    ``fg_ari``, ``ari``, ``overlaps``, ``binding`` choose what is computed; ``suffix`` is appended to every key
    (e.g. ``"_attention"`` for a second segmentation of the same images).

    Example::

        metric = SegmentationMetric()
        for true, pred in loader:
            metric.update(true, pred)
        metric.compute()  # {"fg_ari": ..., "mbo_objects": ..., ..., "num_objects": ..., "owner_ground": ...}
    """

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        *,
        fg_ari: bool = True,
        ari: bool = False,
        overlaps: bool = True,
        binding: bool = True,
        suffix: str = "",
        matching: str = "oclf",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if matching not in MATCHINGS:
            raise ValueError(f"unknown mIoU matching {matching!r}: use one of {', '.join(MATCHINGS)}")
        self.with_fg_ari, self.with_ari, self.with_overlaps, self.with_binding = fg_ari, ari, overlaps, binding
        self.suffix, self.matching = suffix, matching
        names = (["fg_ari"] if fg_ari else []) + (["ari"] if ari else []) + (list(OVERLAP_FIELDS) if overlaps else [])
        names += list(BINDING_FIELDS) if binding else []
        for name in names:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, true: Tensor, pred: Tensor, num_pred: int | None = None) -> None:
        """Add a batch: ``true``, ``pred`` label maps ``[B, H, W]`` (0 = background in ``true``) or masks;
        ``num_pred``: how many slots there were (for the "lsd" matching, which counts empty ones)."""
        true, pred = to_labels(true), to_labels(pred)
        if self.with_fg_ari:
            self._add("fg_ari", ari_score(true, pred, foreground_only=True).double())
        if self.with_ari:
            self._add("ari", ari_score(true, pred, foreground_only=False).double())
        if self.with_overlaps:
            for name, (per_object, per_image) in (
                ("mbo", best_overlap(true, pred)),
                ("miou", matched_iou(true, pred, self.matching, num_pred)),
            ):
                self._add(f"{name}_objects", per_object.double())
                self._add(f"{name}_images", per_image.double())
        if self.with_binding:
            for name, value in binding_errors(true, pred).items():
                self._add(name, value)

    def _add(self, name: str, value: Tensor) -> None:
        getattr(self, name).append(value)

    def _values(self, name: str) -> Tensor:
        state = getattr(self, name)
        if isinstance(state, Tensor):
            return state.cpu()
        return dim_zero_cat(state).cpu() if len(state) else torch.zeros(0, dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.with_fg_ari:
            out["fg_ari"] = mean_ignoring_nan(self._values("fg_ari"))
        if self.with_ari:
            out["ari"] = mean_ignoring_nan(self._values("ari"))
        if self.with_overlaps:
            out.update({name: _mean(self._values(name)) for name in OVERLAP_FIELDS})
            out["num_objects"] = int(self._values("mbo_objects").numel())
        if self.with_binding:
            out.update(summarise_binding([{name: self._values(name) for name in BINDING_FIELDS}]))
        return {f"{k}{self.suffix}": v for k, v in out.items()}
