"""PNG pictures of what a model does: input, reconstruction, segmentations, per-slot masks and contents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from slotlab.data.transforms import to_uint8

# Distinct colours for segmentation label maps (label i -> PALETTE[i % len]).
PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
     [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128],
     [128, 128, 128], [255, 255, 255], [100, 100, 255], [255, 100, 100]],
    dtype=np.uint8,
)


def colourise(labels: Tensor) -> Tensor:
    """Label maps [B, H, W] -> uint8 RGB [B, 3, H, W]."""
    return torch.from_numpy(PALETTE[labels.long().numpy() % len(PALETTE)]).permute(0, 3, 1, 2)


def slot_grid(
    images: Tensor,
    reconstruction: Tensor,
    masks: Tensor,
    rgb: Tensor,
    true_labels: Tensor | None = None,
    scale: int = 3,
) -> Image.Image:
    """One row per image: input | reconstruction | predicted segmentation | [ground truth] | alpha mask k |
    slot k's contents (rgb * alpha on white), for every slot k.

    images, reconstruction [B, 3, H, W] in [-1, 1]; masks [B, K, 1, H, W]; rgb [B, K, 3, H, W].
    """
    images, reconstruction, masks, rgb = (t.detach().float().cpu() for t in (images, reconstruction, masks, rgb))
    b, k = masks.shape[:2]
    pred = masks[:, :, 0].argmax(1)
    alpha_rgb = (masks * 255).round().to(torch.uint8).expand(-1, -1, 3, -1, -1)
    contents = to_uint8(rgb * masks + (1 - masks))  # white where the slot is absent
    columns = [("input", to_uint8(images)), ("recon", to_uint8(reconstruction)), ("segment", colourise(pred))]
    if true_labels is not None:
        columns.append(("truth", colourise(true_labels.cpu())))
    columns += [(f"mask {i}", alpha_rgb[:, i]) for i in range(k)]
    columns += [(f"slot {i}", contents[:, i]) for i in range(k)]
    h, w = images.shape[-2] * scale, images.shape[-1] * scale
    pad, header = 2, 14
    sheet = Image.new("RGB", (len(columns) * (w + pad) + pad, header + b * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, (title, col) in enumerate(columns):
        x = pad + c * (w + pad)
        draw.text((x + 2, 1), title, fill=(0, 0, 0))
        for r in range(b):
            tile = Image.fromarray(col[r].permute(1, 2, 0).numpy()).resize((w, h), Image.NEAREST)
            sheet.paste(tile, (x, header + pad + r * (h + pad)))
    return sheet


def save_png(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@torch.no_grad()
def draw_model_grid(model, dataset, path: str | Path, num_images: int = 8, seed: int = 0) -> Path:
    """Run ``model`` on the first ``num_images`` of ``dataset`` and save :func:`slot_grid` as a PNG."""
    model.eval()
    device = next(model.parameters()).device
    batch = dataset[torch.arange(min(num_images, len(dataset)))]
    g = torch.Generator(device=device).manual_seed(seed)
    out = model(batch["image"].to(device), generator=g, return_loss=False)
    grid = slot_grid(batch["image"], out.reconstruction, out.masks, out.rgb, batch.get("labels"))
    return save_png(grid, path)
