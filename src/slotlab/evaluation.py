"""Evaluate a trained object-discovery model on a dataset: segmentation metrics as a dict."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from slotlab.data.datasets import SceneDataset, SequentialBatchSampler
from slotlab.metrics import ari_score, mean_ignoring_nan
from slotlab.models import SlotAutoencoder


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
    scores Slot Attention's last-iteration attention, upsampled to the image.

    Slot initialisation noise is drawn from a generator seeded with ``seed``, so results repeat exactly.
    """
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    fg, full, fg_attn, mse = [], [], [], []
    for idx in tqdm(SequentialBatchSampler(len(dataset), batch_size), desc="evaluate", disable=not progress, leave=False):
        batch = dataset[idx]
        images = batch["image"].to(device)
        out = model(images, num_iterations=num_iterations, generator=g)
        mse.append(((out.reconstruction - images) ** 2).mean(dim=(1, 2, 3)).cpu())
        if "labels" in batch:
            pred = predicted_labels(out.masks).cpu()
            fg.append(ari_score(batch["labels"], pred, foreground_only=True))
            full.append(ari_score(batch["labels"], pred, foreground_only=False))
            attn_pred = attention_labels(out.attn[:, -1], images.shape[-1]).cpu()
            fg_attn.append(ari_score(batch["labels"], attn_pred, foreground_only=True))
    metrics = {"num_images": len(dataset), "mse": float(torch.cat(mse).mean())}
    if fg:
        metrics["fg_ari"] = mean_ignoring_nan(torch.cat(fg))
        metrics["ari"] = mean_ignoring_nan(torch.cat(full))
        metrics["fg_ari_attention"] = mean_ignoring_nan(torch.cat(fg_attn))
        metrics["averaged_over"] = "images"
    return metrics
