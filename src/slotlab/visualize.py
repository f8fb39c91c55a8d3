"""PNG pictures of what a model does: input, reconstruction, segmentations, per-slot masks and contents, and
set predictions (predicted vs true objects, per-slot attention).

Each model kind's picture (named in :mod:`slotlab.kinds`) has one signature:
``draw(model, dataset, path, num_images=8, seed=0, sampling=None) -> Path`` (``sampling``: how a diffusion
decoder samples; the others ignore it)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from slotlab.data.formats.clevr import COLOR_RGB, COLORS, MATERIALS, SHAPES, SIZES
from slotlab.data.transforms import to_uint8
from slotlab.io import atomic_path, check_output
from slotlab.models import Sampling, mask_labels

# Distinct colours for segmentation label maps (label i -> PALETTE[i % len]).
PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [220, 190, 255],
        [170, 110, 40],
        [255, 250, 200],
        [128, 0, 0],
        [170, 255, 195],
        [128, 128, 0],
        [255, 215, 180],
        [0, 0, 128],
        [128, 128, 128],
        [255, 255, 255],
        [100, 100, 255],
        [255, 100, 100],
    ],
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
    _b, k = masks.shape[:2]
    pred = mask_labels(masks[:, :, 0])
    alpha_rgb = (masks * 255).round().to(torch.uint8).expand(-1, -1, 3, -1, -1)
    contents = to_uint8(rgb * masks + (1 - masks))  # white where the slot is absent
    columns = [("input", to_uint8(images)), ("recon", to_uint8(reconstruction)), ("segment", colourise(pred))]
    if true_labels is not None:
        columns.append(("truth", colourise(true_labels.cpu())))
    columns += [(f"mask {i}", alpha_rgb[:, i]) for i in range(k)]
    columns += [(f"slot {i}", contents[:, i]) for i in range(k)]
    return column_sheet(columns, scale)


def column_sheet(columns: list[tuple[str, Tensor]], scale: int = 3) -> Image.Image:
    """Titled columns of uint8 images [B, 3, H, W] side by side, one row per image, upscaled by ``scale``."""
    b, _, h, w = columns[0][1].shape
    h, w = h * scale, w * scale
    pad, header = 2, 14
    sheet = Image.new("RGB", (len(columns) * (w + pad) + pad, header + b * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, (title, col) in enumerate(columns):
        x = pad + c * (w + pad)
        draw.text((x + 2, 1), title, fill=(0, 0, 0))
        for r in range(b):
            tile = Image.fromarray(col[r].permute(1, 2, 0).numpy()).resize((w, h), Image.Resampling.NEAREST)
            sheet.paste(tile, (x, header + pad + r * (h + pad)))
    return sheet


@torch.no_grad()
def draw_lsd_grid(
    model, dataset, path: str | Path, num_images: int = 8, seed: int = 0, sampling: Sampling | None = None
) -> Path:
    """Latent Slot Diffusion, one row per image: input | the image autoencoder's reconstruction (the ceiling) |
    decoded from the slots by reverse diffusion | segmentation from the attention | [ground truth] |
    each slot's attention map."""
    sampling = sampling or Sampling()
    model.eval()
    device = next(model.parameters()).device
    batch = dataset[torch.arange(min(num_images, len(dataset)))]
    images = batch["image"].to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    enc = model.encode(images, generator=g)
    decoded = model.render(enc.slots, sampling, generator=g)
    autoencoder = model.image_autoencoder
    ceiling = autoencoder.decode(autoencoder.encode(images, sample=False), clamp=True)
    size = images.shape[-1]
    maps = model.slot_masks(enc, size, "attention")
    columns = [
        ("input", to_uint8(images.cpu())),
        ("autoencoder", to_uint8(ceiling.cpu())),
        (f"from slots ({sampling.steps} steps)", to_uint8(decoded.cpu())),
        ("segment", colourise(mask_labels(maps).cpu())),
    ]
    if "labels" in batch:
        columns.append(("truth", colourise(batch["labels"])))
    grey = (maps.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    columns += [(f"attn {k}", grey[:, k : k + 1].expand(-1, 3, -1, -1)) for k in range(grey.shape[1])]
    return save_png(column_sheet(columns), path)


def save_png(image: Image.Image, path: str | Path) -> Path:
    """``image`` as a PNG file, written atomically; ``path`` must end in .png."""
    path = check_output(path, ".png", "a picture")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


@torch.no_grad()
def draw_model_grid(
    model, dataset, path: str | Path, num_images: int = 8, seed: int = 0, sampling: Sampling | None = None
) -> Path:
    """Run ``model`` on the first ``num_images`` of ``dataset`` and save :func:`slot_grid` as a PNG."""
    model.eval()
    device = next(model.parameters()).device
    batch = dataset[torch.arange(min(num_images, len(dataset)))]
    g = torch.Generator(device=device).manual_seed(seed)
    out = model(batch["image"].to(device), generator=g, return_loss=False)
    grid = slot_grid(batch["image"], out.reconstruction, out.masks, out.rgb, batch.get("labels"))
    return save_png(grid, path)


def describe_objects(vectors: Tensor) -> list[tuple[str, str, str]]:
    """19-dim set-prediction vectors [M, 19] -> per object (CLEVR colour name, "large red metal sphere",
    "xyz (1.23, -0.45, 0.70)") with the coordinates back in scene units."""
    vectors = vectors.detach().float().cpu()
    xyz = vectors[:, :3] * 6 - 3
    groups = vectors[:, 3:-1].split([len(SIZES), len(MATERIALS), len(SHAPES), len(COLORS)], dim=1)
    size, material, shape, colour = (g.argmax(1).tolist() for g in groups)
    return [
        (COLORS[c], f"{SIZES[s]} {COLORS[c]} {MATERIALS[m]} {SHAPES[h]}", "xyz ({:.2f}, {:.2f}, {:.2f})".format(*p))
        for s, m, h, c, p in zip(size, material, shape, colour, xyz.tolist())
    ]


def _slot_colour(k: int) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in PALETTE[k % len(PALETTE)])
    return r, g, b


def _contrast(rgb) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``rgb``."""
    return (0, 0, 0) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else (255, 255, 255)


def _label(draw: ImageDraw.ImageDraw, xy, text: str, fill, font, bounds: tuple[int, int] | None = None) -> None:
    """``text`` on a box of colour ``fill`` with its top-left at ``xy`` (moved inside ``bounds`` = (W, H))."""
    _, _, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right + 3, bottom + 2
    x, y = xy
    if bounds is not None:
        x, y = min(max(x, 0), bounds[0] - w), min(max(y, 0), bounds[1] - h)
    draw.rectangle((x, y, x + w - 1, y + h - 1), fill=fill, outline=_contrast(fill))
    draw.text((x + 2, y + 1), text, fill=_contrast(fill), font=font)


def set_prediction_grid(
    images: Tensor,
    predictions: Tensor,
    attn: Tensor,
    targets: Tensor | None = None,
    threshold: float = 0.5,
    scale: int = 3,
) -> Image.Image:
    """One row per image: the input with a numbered marker at the attention centroid of every slot whose
    confidence is >= ``threshold`` | those slots' predicted objects, most confident first, and the true objects
    below them ("gt") | every slot's last-iteration attention (white = all of the pixel), framed in its colour.

    images [B, 3, R, R] in [-1, 1]; predictions [B, K, 19]; attn [B, T, N, K] over an h x w feature grid, N = h * w;
    targets [B, M, 19] (zero rows = no object).
    """
    images, predictions = images.detach().float().cpu(), predictions.detach().float().cpu()
    b, k = predictions.shape[:2]
    res = images.shape[-1]
    side = math.isqrt(attn.shape[2])  # square feature grid, N = side * side
    last = attn[:, -1].detach().float().cpu()  # [B, N, K], softmax over slots
    h = w = int(res * scale)

    # Attention maps at the image size, and each slot's attention-weighted mean feature-cell centre (in pixels).
    maps = last.transpose(1, 2).reshape(b, k, side, side)
    maps = to_uint8(F.interpolate(maps, size=(res, res), mode="nearest") * 2 - 1)  # [B, K, R, R]
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) * (w / side)
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1).reshape(-1, 2)  # [N, (x, y)]
    weights = last / last.sum(1, keepdim=True).clamp_min(1e-12)
    centroids = torch.einsum("bnk,nc->bkc", weights, grid)  # [B, K, 2]

    confidence = predictions[..., -1]
    order = confidence.argsort(dim=1, descending=True)
    shown = [[i for i in order[r].tolist() if confidence[r, i] >= threshold] for r in range(b)]

    # Text panel: rows of (slot or None, id, confidence, CLEVR colour, description, xyz).
    font = ImageFont.load_default()
    lines: list[list[tuple[Any, str, str, Any, str, str]]] = []
    for r in range(b):
        row: list[tuple[Any, str, str, Any, str, str]] = [
            (None, f"slots with confidence >= {threshold:.2f}", "", None, "", "")
        ]
        if not shown[r]:
            row.append((None, "(none)", "", None, "", ""))
        objects = describe_objects(predictions[r, shown[r]])
        row += [(i, str(i), f"{confidence[r, i]:.2f}", *o) for i, o in zip(shown[r], objects)]
        if targets is not None:
            real = targets[r].detach().float().cpu()
            real = real[real[:, -1] > 0.5]
            row.append((None, f"ground truth ({len(real)} objects)", "", None, "", ""))
            row += [(None, "gt", "", *o) for o in describe_objects(real)]
        lines.append(row)

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = measure.textbbox((0, 0), "Ag", font=font)[3] + 4
    swatch = line_h - 4
    gap, pad, header, frame = 8, 4, 14, 3

    def width(text: str | None) -> int:
        return int(np.ceil(measure.textlength(text or "", font=font)))

    table = [line for row in lines for line in row if line[3] is not None]
    col = [max([width(line[j]) for line in table] + [0]) for j in (1, 2, 4, 5)]
    x_id = pad + swatch + 3
    x_conf = x_id + col[0] + gap
    x_swatch = x_conf + col[1] + gap
    x_desc = x_swatch + swatch + 4
    x_xyz = x_desc + col[2] + gap
    titles = [width(line[1]) for row in lines for line in row if line[3] is None]
    panel_w = max([x_xyz + col[3], pad + max(titles)]) + pad
    row_h = max(h, max(len(row) for row in lines) * line_h + 2 * pad)

    columns = [f"input, slots >= {threshold:.2f}", "set prediction"] + [f"attention {i}" for i in range(k)]
    x_cols = [gap, 2 * gap + w] + [3 * gap + w + panel_w + i * (w + gap) for i in range(k)]
    sheet = Image.new("RGB", (int(x_cols[-1] + w + gap), int(header + b * (row_h + gap) + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for x, title in zip(x_cols, columns):
        draw.text((x + 2, 1), title, fill=(0, 0, 0), font=font)

    radius = max(4, w // 40)
    for r in range(b):
        top = header + gap + r * (row_h + gap)
        tile = Image.fromarray(to_uint8(images[r]).permute(1, 2, 0).numpy()).resize((w, h), Image.Resampling.NEAREST)
        tile_draw = ImageDraw.Draw(tile)
        for i in reversed(shown[r]):  # most confident drawn last, on top; numbers over every circle
            cx, cy = centroids[r, i].tolist()
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            tile_draw.ellipse(box, outline=_contrast(_slot_colour(i)), width=4)
            tile_draw.ellipse(box, outline=_slot_colour(i), width=2)
        for i in reversed(shown[r]):
            cx, cy = centroids[r, i].tolist()
            _label(tile_draw, (cx + radius - 1, cy - radius - line_h + 2), str(i), _slot_colour(i), font, (w, h))
        sheet.paste(tile, (int(x_cols[0]), int(top)))

        x0 = x_cols[1]
        draw.rectangle((x0, top, x0 + panel_w - 1, top + row_h - 1), outline=(200, 200, 200))
        for j, (slot, name, conf, clevr_colour, desc, xyz) in enumerate(lines[r]):
            y = top + pad + j * line_h
            if clevr_colour is None:  # a heading
                draw.text((x0 + pad, y), name, fill=(90, 90, 90), font=font)
                continue
            if slot is not None:
                draw.rectangle(
                    (x0 + pad, y + 1, x0 + pad + swatch - 1, y + swatch), fill=_slot_colour(slot), outline=(0, 0, 0)
                )
            draw.rectangle(
                (x0 + x_swatch, y + 1, x0 + x_swatch + swatch - 1, y + swatch),
                fill=COLOR_RGB[clevr_colour],
                outline=(0, 0, 0),
            )
            for x, text in ((x_id, name), (x_conf, conf), (x_desc, desc), (x_xyz, xyz)):
                draw.text((x0 + x, y), text, fill=(0, 0, 0), font=font)

        for i in range(k):
            x, colour = x_cols[2 + i], _slot_colour(i)
            draw.rectangle((x - frame, top - frame, x + w + frame - 1, top + h + frame - 1), fill=colour)
            tile = Image.fromarray(maps[r, i].numpy()).resize((w, h), Image.Resampling.NEAREST).convert("RGB")
            _label(ImageDraw.Draw(tile), (0, 0), f"{i}: {confidence[r, i]:.2f}", colour, font)
            sheet.paste(tile, (int(x), int(top)))
    return sheet


@torch.no_grad()
def draw_set_prediction_grid(
    model,
    dataset,
    path: str | Path,
    num_images: int = 8,
    seed: int = 0,
    threshold: float = 0.5,
    sampling: Sampling | None = None,
) -> Path:
    """Run a :class:`~slotlab.models.set_prediction.SlotSetPredictor` on the first ``num_images`` of ``dataset``
    and save :func:`set_prediction_grid` (with the true objects when the dataset has ``targets``) as a PNG."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = dataset[torch.arange(min(num_images, len(dataset)))]
    g = torch.Generator(device=device).manual_seed(seed)
    out = model(batch["image"].to(device), generator=g)
    model.train(was_training)
    grid = set_prediction_grid(batch["image"], out.predictions, out.attn, batch.get("targets"), threshold)
    return save_png(grid, path)
