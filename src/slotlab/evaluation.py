"""Evaluate a trained model on a dataset: metrics as a dict (segmentation for object discovery, AP for set
prediction)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from slotlab.data.datasets import SceneDataset, SequentialBatchSampler
from slotlab.errors import DataError
from slotlab.metrics import (
    SegmentationReport,
    ari_score,
    binding_errors,
    image_mse,
    mean_ignoring_nan,
    psnr,
    summarise_binding,
)
from slotlab.metrics.average_precision import average_precisions
from slotlab.models import SlotAutoencoder
from slotlab.models.set_prediction import SlotSetPredictor


def predicted_labels(masks: torch.Tensor) -> torch.Tensor:
    """Alpha masks [B, K, 1, H, W] -> argmax slot per pixel [B, H, W]."""
    return masks[:, :, 0].argmax(dim=1)


def attention_labels(attn: torch.Tensor, size: int) -> torch.Tensor:
    """Slot Attention's last-iteration attention [B, N, K] (N = h * w) -> argmax slot per pixel [B, size, size],
    upsampled bilinearly."""
    b, n, k = attn.shape
    side = math.isqrt(n)
    maps = attn.transpose(1, 2).reshape(b, k, side, side).float()
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False).argmax(dim=1)


@torch.no_grad()
def evaluate_object_discovery(
    model: SlotAutoencoder,
    dataset: SceneDataset,
    batch_size: int = 64,
    seed: int = 0,
    num_iterations: int | None = None,
    progress: bool = False,
) -> dict:
    """FG-ARI, ARI (averaged over images) and reconstruction MSE of ``model`` on ``dataset``.

    ``fg_ari`` and ``ari`` score the decoder's alpha masks (the paper's protocol); ``fg_ari_attention``
    scores Slot Attention's last-iteration attention, upsampled to the image. With masks, the binding diagnostics of
    :func:`~slotlab.metrics.binding_errors` (decoder masks, over all objects) say what the errors are: ``split_objects``
    (under 90 % of the object in one slot), ``merged_objects`` (its slot also holds another object),
    ``object_purity``, ``owner_ground`` (the share of background in the slot that owns an object) and
    ``stray_to_spare`` (the share of misassigned object pixels held by slots that own no object).

    Slot initialisation noise is drawn from a generator seeded with ``seed``, so results repeat exactly.
    """
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    fg, full, fg_attn, mse, binding = [], [], [], [], []
    for idx in tqdm(SequentialBatchSampler(len(dataset), batch_size), desc="evaluate", disable=not progress, leave=False):
        batch = dataset[idx]
        images = batch["image"].to(device)
        out = model(images, num_iterations=num_iterations, generator=g)
        mse.append(((out.reconstruction - images) ** 2).mean(dim=(1, 2, 3)).cpu())
        if "labels" in batch:
            pred = predicted_labels(out.masks).cpu()
            fg.append(ari_score(batch["labels"], pred, foreground_only=True))
            binding.append(binding_errors(batch["labels"], pred))
            full.append(ari_score(batch["labels"], pred, foreground_only=False))
            attn_pred = attention_labels(out.attn[:, -1], images.shape[-1]).cpu()
            fg_attn.append(ari_score(batch["labels"], attn_pred, foreground_only=True))
    metrics = {"num_images": len(dataset), "mse": float(torch.cat(mse).mean())}
    if fg:
        metrics["fg_ari"] = mean_ignoring_nan(torch.cat(fg))
        metrics["ari"] = mean_ignoring_nan(torch.cat(full))
        metrics["fg_ari_attention"] = mean_ignoring_nan(torch.cat(fg_attn))
        metrics["averaged_over"] = "images"
        metrics.update(summarise_binding(binding))
    return metrics


@torch.no_grad()
def evaluate_set_prediction(
    model: SlotSetPredictor,
    dataset: SceneDataset,
    batch_size: int = 64,
    seed: int = 0,
    num_iterations: int | None = None,
    progress: bool = False,
) -> dict:
    """AP at every distance threshold (``ap_inf``, ``ap_1``, ... ``ap_0.125``), all images ranked together, and
    the Hungarian Huber loss, of ``model`` on a dataset with set-prediction ``targets``."""
    if "targets" not in dataset.extra:
        raise DataError("the data has no set-prediction targets (CLEVR scenes) to score against")
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    preds, targets, losses = [], [], []
    for idx in tqdm(SequentialBatchSampler(len(dataset), batch_size), desc="evaluate", disable=not progress, leave=False):
        batch = dataset[idx]
        out = model(batch["image"].to(device), batch["targets"].to(device), num_iterations=num_iterations, generator=g)
        preds.append(out.predictions.float().cpu())
        targets.append(batch["targets"].float())
        losses.append(out.loss.item() * len(idx))
    metrics = {"num_images": len(dataset), **average_precisions(torch.cat(preds), torch.cat(targets))}
    metrics["loss"] = sum(losses) / len(dataset)
    return metrics


@torch.no_grad()
def evaluate_lsd(model, dataset: SceneDataset, batch_size: int = 64, seed: int = 0, num_iterations: int | None = None,
                 progress: bool = False) -> dict:
    """Segmentation of a Latent Slot Diffusion model from its last-iteration attention (upsampled, argmax):
    ``fg_ari`` (mean over images), ``mbo_objects``/``miou_objects`` (mean over all objects, the LSD paper's
    convention) and ``mbo_images``/``miou_images`` (mean over images of per-image means), and the binding
    diagnostics of :func:`~slotlab.metrics.binding_errors` over all objects (``split_objects``, ``merged_objects``,
    ``owner_ground``, ...)."""
    if dataset.labels is None:
        raise DataError("the data has no masks to score the segmentation against")
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    report = SegmentationReport()
    for idx in tqdm(SequentialBatchSampler(len(dataset), batch_size), desc="evaluate", disable=not progress, leave=False):
        batch = dataset[idx]
        enc = model.encode(batch["image"].to(device), num_iterations=num_iterations, generator=g)
        report.update(batch["labels"], attention_labels(enc.attn[:, -1], batch["labels"].shape[-1]).cpu())
    return {"num_images": len(dataset), **report.compute(), "fg_ari_averaged_over": "images"}


@torch.no_grad()
def evaluate_autoencoder(model, dataset: SceneDataset, batch_size: int = 64, progress: bool = False, **_) -> dict:
    """Reconstruction MSE and PSNR (images in [-1, 1], posterior mode) of an image autoencoder."""
    model.eval()
    device = next(model.parameters()).device
    mse, db = [], []
    for idx in tqdm(SequentialBatchSampler(len(dataset), batch_size), desc="evaluate", disable=not progress, leave=False):
        images = dataset[idx]["image"].to(device)
        rec = model.decode(model.encode(images, sample=False))
        mse.append(image_mse(rec, images).cpu())
        db.append(psnr(rec, images).cpu())
    return {"num_images": len(dataset), "mse": float(torch.cat(mse).mean()), "psnr": float(torch.cat(db).mean())}


def evaluate(model, dataset: SceneDataset, **kwargs) -> dict:
    """The metrics of the model's task."""
    from slotlab.models.image_autoencoder import ImageAutoencoder
    from slotlab.models.lsd import LatentSlotDiffusion

    if isinstance(model, SlotSetPredictor):
        return evaluate_set_prediction(model, dataset, **kwargs)
    if isinstance(model, LatentSlotDiffusion):
        return evaluate_lsd(model, dataset, **kwargs)
    if isinstance(model, ImageAutoencoder):
        return evaluate_autoencoder(model, dataset, **kwargs)
    return evaluate_object_discovery(model, dataset, **kwargs)
