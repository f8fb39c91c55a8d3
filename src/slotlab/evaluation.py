"""Scoring models: the one metric path shared by validation during training and ``slotlab eval``.

An :class:`Evaluator` says how a model kind is scored: :meth:`~Evaluator.metrics` gives a fresh
:class:`~slotlab.metrics.MetricSet` (torchmetrics accumulators, reduced across DDP ranks) and
:meth:`~Evaluator.update` runs the model on one batch and adds it. A kind's Lightning module calls ``update`` in its
``validation_step`` (slot noise from a generator seeded with ``trainer.seed + batch index``) and logs
``compute()`` at the end of the epoch; :func:`run_evaluator` runs the same ``update`` over a dataset, with a generator
seeded with ``seed + batch index``. On the same data, batches, seed and weights the two agree exactly.

The registry (:mod:`slotlab.kinds`) names each kind's evaluator.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from slotlab.data.datasets import SceneDataset, SequentialBatchSampler
from slotlab.errors import ConfigError, DataError
from slotlab.metrics import (
    AveragePrecisionMetric,
    MeanMetric,
    MetricSet,
    SegmentationMetric,
    image_mse,
    psnr,
    slot_collapse,
)
from slotlab.models import attention_masks, mask_labels

MATCHING_NOTES = {
    "oclf": "oclf: Hungarian matching maximising IoU, objects left without a slot score 0",
    "lsd": "lsd: Hungarian matching minimising the cosine distance of one-hot masks, unmatched objects dropped",
}


def attention_labels(attn: Tensor, size: int) -> Tensor:
    """Slot Attention's last-iteration attention [B, N, K] (N = h * w) -> argmax slot per pixel [B, size, size]."""
    return mask_labels(attention_masks(attn, size))


def predicted_labels(masks: Tensor) -> Tensor:
    """Alpha masks [B, K, 1, H, W] -> argmax slot per pixel [B, H, W]."""
    return mask_labels(masks[:, :, 0])


class Evaluator:
    """How one model kind is scored. ``requires``: the batch field that ``slotlab eval`` cannot do without
    (``"labels"``: masks, ``"targets"``: set-prediction targets; None: any data)."""

    requires: ClassVar[str | None] = None
    scored_by: ClassVar[str | None] = None  # the batch field the headline metric (the kind's monitor) needs
    notes: ClassVar[dict[str, Any]] = {}  # what the numbers mean, added to evaluate()'s result

    def can_score(self, dataset: SceneDataset | None) -> bool:
        """Whether validation on ``dataset`` gives the headline metric (and so a best checkpoint)."""
        if dataset is None:
            return False
        return _has(dataset, self.scored_by) if self.scored_by else True

    matching: ClassVar[str] = "oclf"  # how mIoU matches objects to slots by default: the kind's paper's protocol

    def metrics(self, matching: str | None = None) -> MetricSet:
        """Fresh accumulators; ``matching``: the mIoU protocol ("oclf" or "lsd"), default the kind's."""
        raise NotImplementedError

    def describe(self, matching: str | None = None) -> dict[str, Any]:
        """What the numbers mean, added to :func:`run_evaluator`'s result."""
        return dict(self.notes)

    def update(
        self,
        model,
        batch: dict[str, Tensor],
        metrics: MetricSet,
        generator: torch.Generator | None,
        num_iterations: int | None = None,
        num_slots: int | None = None,
    ) -> Tensor | None:
        """Run ``model`` on ``batch`` (tensors on the model's device) and add the results to ``metrics``; returns
        the training loss of the batch where the kind has one that needs nothing more than the batch.
        ``num_iterations``, ``num_slots``: Slot Attention's T and K at test time (default: the model's, T
        being its ``eval_iterations`` where set)."""
        raise NotImplementedError

    def check(self, dataset: SceneDataset, where: str = "the data") -> None:
        """A one-line error when ``dataset`` lacks what this kind cannot be scored without."""
        if self.requires and not _has(dataset, self.requires):
            raise DataError(f"{where}: has no {_WHAT[self.requires]}")


_WHAT = {"labels": "masks to score the segmentation against", "targets": "set-prediction targets to score against"}


def _has(dataset: SceneDataset, field: str) -> bool:
    return dataset.labels is not None if field == "labels" else field in dataset.extra


def collapse_metrics() -> dict[str, MeanMetric]:
    return {"attention_peak": MeanMetric(), "slot_similarity": MeanMetric()}


def update_collapse(metrics: MetricSet, attn: Tensor, slots: Tensor) -> None:
    """Adds :func:`~slotlab.metrics.slot_collapse` of the last iteration's attention [B, T, N, K] and the slots."""
    for name, value in slot_collapse(attn[:, -1], slots).items():
        metrics[name].update(value)  # type: ignore[operator]


class ObjectDiscoveryEvaluator(Evaluator):
    """The Slot Attention autoencoder: reconstruction ``mse``; with masks, the segmentation of the decoder's alpha
    masks (the paper's protocol: ``fg_ari``, ``ari``, mBO, mIoU and the binding diagnostics of
    :func:`~slotlab.metrics.binding_errors`: ``split_objects``, ``merged_objects``, ``object_purity``,
    ``owner_ground``, ``stray_to_spare``) and ``fg_ari_attention`` of the last iteration's attention; always the
    collapse diagnostics ``attention_peak`` and ``slot_similarity`` (:func:`~slotlab.metrics.slot_collapse`)."""

    scored_by = "labels"  # without masks: the reconstruction and the collapse diagnostics
    notes = {"averaged_over": "images"}

    def metrics(self, matching: str | None = None) -> MetricSet:
        return MetricSet(
            {
                "mse": MeanMetric(),
                "segmentation": SegmentationMetric(ari=True, matching=matching or self.matching),
                "attention": SegmentationMetric(overlaps=False, binding=False, suffix="_attention"),
                **collapse_metrics(),
            }
        )

    def update(self, model, batch, metrics, generator, num_iterations=None, num_slots=None):
        images = batch["image"]
        out = model(images, num_slots, num_iterations, generator=generator)
        metrics["mse"].update(image_mse(out.reconstruction, images))
        update_collapse(metrics, out.attn, out.slots)
        if "labels" in batch:
            labels = batch["labels"]
            metrics["segmentation"].update(labels, predicted_labels(out.masks).to(labels.device), out.masks.shape[1])
            metrics["attention"].update(labels, attention_labels(out.attn[:, -1], labels.shape[-1]).to(labels.device))
        return out.loss


class SetPredictionEvaluator(Evaluator):
    """Set prediction: AP at every distance threshold (``ap_inf``, ``ap_1``, ... ``ap_0.125``; all predictions
    ranked together) and the Hungarian Huber ``loss``."""

    requires = scored_by = "targets"

    def metrics(self, matching: str | None = None) -> MetricSet:
        return MetricSet({"ap": AveragePrecisionMetric(), "loss": MeanMetric()})

    def update(self, model, batch, metrics, generator, num_iterations=None, num_slots=None):
        targets = batch["targets"]
        out = model(batch["image"], targets, num_slots, num_iterations, generator=generator)
        metrics["ap"].update(out.predictions, targets, out.logits[..., -1])  # ranked on the logits: no saturation
        metrics["loss"].update(out.loss, weight=len(targets))
        return out.loss


class LatentSlotDiffusionEvaluator(Evaluator):
    """Latent Slot Diffusion: the segmentation from the last iteration's attention (upsampled, argmax): ``fg_ari``
    (mean over images), ``mbo_objects``/``miou_objects`` (mean over all objects, the LSD paper's convention),
    ``mbo_images``/``miou_images`` and the binding diagnostics; the collapse diagnostics ``attention_peak`` and
    ``slot_similarity``; with ``latents`` in the batch (validation) also the diffusion ``loss`` and ``slot_reliance``
    (how much that loss rises when each image is given another image's slots:
    :meth:`~slotlab.models.lsd.LatentSlotDiffusion.slot_reliance`)."""

    requires = scored_by = "labels"
    notes = {"fg_ari_averaged_over": "images"}
    matching = "lsd"  # the official LSD evaluation's

    def metrics(self, matching: str | None = None) -> MetricSet:
        segmentation = SegmentationMetric(matching=matching or self.matching)
        return MetricSet(
            {"loss": MeanMetric(), "slot_reliance": MeanMetric(), "segmentation": segmentation, **collapse_metrics()}
        )

    def update(self, model, batch, metrics, generator, num_iterations=None, num_slots=None):
        images, loss = batch["image"], None
        if "latents" in batch:  # the slots come first from the generator, so they equal encode()'s
            out = model(images, batch["latents"].float(), generator, num_iterations, num_slots)
            attn, slots, loss = out.attn, out.slots, out.loss
            metrics["loss"].update(loss, weight=len(images))
            if len(images) > 1:
                reliance = model.slot_reliance(batch["latents"].float(), slots, generator)
                metrics["slot_reliance"].update(reliance, weight=len(images))
        else:
            encoded = model.encode(images, num_slots, num_iterations, generator)
            attn, slots = encoded.attn, encoded.slots
        update_collapse(metrics, attn, slots)
        if "labels" in batch:
            labels = batch["labels"]
            pred = attention_labels(attn[:, -1], labels.shape[-1]).to(labels.device)
            metrics["segmentation"].update(labels, pred, attn.shape[-1])
        return loss


class ImageAutoencoderEvaluator(Evaluator):
    """An image autoencoder: reconstruction ``mse`` and ``psnr`` (per image, images in [-1, 1], posterior mode)."""

    def metrics(self, matching: str | None = None) -> MetricSet:
        return MetricSet({"mse": MeanMetric(), "psnr": MeanMetric()})

    def update(self, model, batch, metrics, generator, num_iterations=None, num_slots=None):
        images = batch["image"]
        out = model(images, sample=False)
        metrics["mse"].update(image_mse(out.reconstruction, images))
        metrics["psnr"].update(psnr(out.reconstruction, images))
        return None


@torch.no_grad()
def run_evaluator(
    evaluator: Evaluator,
    model,
    dataset: SceneDataset,
    batch_size: int = 64,
    seed: int = 0,
    num_iterations: int | None = None,
    progress: bool = False,
    matching: str | None = None,
    num_slots: int | None = None,
) -> dict:
    """Score ``model`` on ``dataset`` with ``evaluator``: ``{"num_images", **metrics, **notes}``.

    Batches of ``batch_size`` in order; the slot initialisation noise of batch ``i`` comes from a generator seeded
    with ``seed + i`` (as in validation), so results repeat exactly. ``matching``: the mIoU protocol, "oclf" or
    "lsd" (default: the kind's paper's; the result says which was used). ``num_iterations``, ``num_slots``: Slot
    Attention's T and K at test time (default: the model's, T being its ``eval_iterations`` where set; K can change
    only where the slots are sampled, not learned)."""
    evaluator.check(dataset)
    grouping = getattr(model, "slot_attention", None)
    if num_slots is not None and grouping is not None and grouping.fixed_num_slots and num_slots != grouping.num_slots:
        raise ConfigError(
            f"this model's {grouping.num_slots} slots are fixed (learned slot queries or the Slot MLP baseline): "
            f"it cannot run with {num_slots}"
        )
    model.eval()
    device = next(model.parameters()).device
    metrics = (evaluator.metrics(matching) if matching else evaluator.metrics()).to(device)
    for i, idx in enumerate(
        tqdm(SequentialBatchSampler(len(dataset), batch_size), desc="evaluate", disable=not progress, leave=False)
    ):
        batch = {k: v.to(device) for k, v in dataset[idx].items()}
        generator = torch.Generator(device=device).manual_seed(seed + i)
        evaluator.update(model, batch, metrics, generator, num_iterations, num_slots)
    result = {"num_images": len(dataset), **metrics.compute(), **evaluator.notes}
    if evaluator.scored_by and not _has(dataset, evaluator.scored_by):
        result["not_scored"] = f"the data has no {_WHAT[evaluator.scored_by]}"
    if "miou_objects" in result:
        result["miou_matching"] = MATCHING_NOTES[matching or evaluator.matching]
    return result


OBJECT_DISCOVERY = ObjectDiscoveryEvaluator()
SET_PREDICTION = SetPredictionEvaluator()
LATENT_SLOT_DIFFUSION = LatentSlotDiffusionEvaluator()
IMAGE_AUTOENCODER = ImageAutoencoderEvaluator()


def evaluate_object_discovery(model, dataset: SceneDataset, **kwargs) -> dict:
    """:func:`run_evaluator` with :class:`ObjectDiscoveryEvaluator`."""
    return run_evaluator(OBJECT_DISCOVERY, model, dataset, **kwargs)


def evaluate_set_prediction(model, dataset: SceneDataset, **kwargs) -> dict:
    """:func:`run_evaluator` with :class:`SetPredictionEvaluator`."""
    return run_evaluator(SET_PREDICTION, model, dataset, **kwargs)


def evaluate_lsd(model, dataset: SceneDataset, **kwargs) -> dict:
    """:func:`run_evaluator` with :class:`LatentSlotDiffusionEvaluator` (segmentation only: no latents)."""
    return run_evaluator(LATENT_SLOT_DIFFUSION, model, dataset, **kwargs)


def evaluate_autoencoder(model, dataset: SceneDataset, **kwargs) -> dict:
    """:func:`run_evaluator` with :class:`ImageAutoencoderEvaluator`."""
    return run_evaluator(IMAGE_AUTOENCODER, model, dataset, **kwargs)
