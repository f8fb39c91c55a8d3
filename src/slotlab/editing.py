"""Scene editing in slot space (LSD paper, section 4): encode images into slots, then remove a slot (object
removal), replace one with a slot of another image (swapping objects, backgrounds, face parts) or insert one
(object insertion), and decode the edited set: by reverse diffusion from noise for Latent Slot Diffusion, by the
spatial broadcast decoder for the Slot Attention autoencoder. Any number of slots can be decoded.

Also :func:`edit_image`: one edit of one image, decoded before and after with the same noise. (New scenes from
a visual concept library: :func:`slotlab.concepts.compose`.)

Everything here goes through the slot-model protocol (:class:`slotlab.models.SlotModel`: ``encode``, ``render``,
``slot_masks``, ``slot_width``), so it works for every kind that draws images from slots.

Shapes: B batch, K slots, D slot width, R image side, m mask side, N = side * side attention inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from slotlab.errors import DataError
from slotlab.fields import build
from slotlab.models import Sampling, SlotModel, attention_masks, resize_masks
from slotlab.models.base import MASK_SOURCES

__all__ = [
    "MASK_SOURCES",
    "EditResult",
    "EncodedSlots",
    "attention_masks",
    "decode_slots",
    "edit_image",
    "edit_sheet",
    "encode_slots",
    "grow_region",
    "insert_slot",
    "load_autoencoder_of",
    "pick_slot",
    "remove_slot",
    "replace_slot",
    "resize_masks",
    "slot_model",
    "slot_segment",
]


@dataclass
class EncodedSlots:
    slots: Tensor  # [B, K, D]
    masks: Tensor  # [B, K, m, m] soft masks in [0, 1] that sum to 1 over the slots at every pixel
    source: str  # "alpha" (the autoencoder decoder's masks) or "attention" (last-iteration Slot Attention)


def slot_model(model) -> SlotModel:
    """``model`` if it draws images from slots (Latent Slot Diffusion, the Slot Attention autoencoder); else a
    one-line DataError."""
    if not isinstance(model, SlotModel) or not model.draws_images:
        raise DataError(
            f"{type(model).__name__}: slots can be collected, edited and decoded only with a model that "
            "draws images from its slots (Latent Slot Diffusion, the Slot Attention autoencoder)"
        )
    return model


@torch.no_grad()
def encode_slots(
    model,
    images: Tensor,
    generator: torch.Generator | None = None,
    mask_size: int | None = None,
    mask_source: str = "auto",
) -> EncodedSlots:
    """images [B, 3, R, R] in [-1, 1] -> slots [B, K, D] and masks [B, K, m, m] (m = ``mask_size``, default R).

    ``mask_source``: "alpha" decodes the slots and takes the broadcast decoder's alpha masks (the Slot Attention
    paper's segmentation; object discovery models only), "attention" takes Slot Attention's last-iteration
    attention, upsampled bilinearly (the only choice for LSD, whose decoder has no masks). "auto": the model's own
    (alpha for the autoencoder, attention for LSD).
    """
    model = slot_model(model)
    enc = model.encode(images, generator=generator)
    masks = model.slot_masks(enc, mask_size or images.shape[-1], mask_source)
    return EncodedSlots(enc.slots, masks, model.mask_source(mask_source))


# ---------------------------------------------------------------------------------------------- slot edits


def _index(i: int, k: int, what: str = "slot") -> int:
    """``i`` in -k..k-1 -> 0..k-1, else a DataError."""
    if not -k <= int(i) < k:
        raise DataError(f"{what} {i} does not exist: there are {k} slots (0 to {k - 1})")
    return int(i) % k


def pick_slot(
    masks: Tensor, index: int | None = None, pixel: tuple[int, int] | None = None, size: int | None = None
) -> int:
    """The slot chosen by ``index`` or, given ``pixel`` = (y, x), the slot whose mask is largest at that pixel.

    masks: [K, H, W], [K, 1, H, W] (alpha masks) or attention [N, K] over a square grid. ``pixel`` is in an
    image of side ``size`` (default: the masks' own side) and is mapped onto the mask grid.
    """
    if (index is None) == (pixel is None):
        raise ValueError("give exactly one of index and pixel")
    if masks.ndim == 2:  # attention [N, K]
        masks = attention_masks(masks[None], math.isqrt(masks.shape[0]))[0]
    elif masks.ndim == 4:
        masks = masks[:, 0]
    k, h, w = masks.shape
    if index is not None:
        return _index(index, k)
    assert pixel is not None
    y, x = (int(v) for v in pixel)
    side_y, side_x = (size, size) if size is not None else (h, w)
    if not (0 <= y < side_y and 0 <= x < side_x):
        raise DataError(f"pixel (y={y}, x={x}) is outside the {side_y}x{side_x} image")
    return int(masks[:, y * h // side_y, x * w // side_x].argmax())


def slot_segment(masks: Tensor, i: int) -> Tensor:
    """masks [..., K, H, W] -> bool [..., H, W]: the pixels where slot ``i``'s mask is the largest."""
    return masks.argmax(-3) == _index(i, masks.shape[-3])


def remove_slot(slots: Tensor, i: int) -> Tensor:
    """slots [..., K, D] -> [..., K - 1, D] without slot ``i``."""
    k = slots.shape[-2]
    i = _index(i, k)
    if k == 1:
        raise DataError("cannot remove the only slot")
    return torch.cat([slots[..., :i, :], slots[..., i + 1 :, :]], dim=-2)


def replace_slot(slots: Tensor, i: int, other_slots: Tensor, j: int) -> Tensor:
    """slots [..., K, D] with slot ``i`` replaced by slot ``j`` of other_slots [..., K2, D] (a new tensor; the
    leading dimensions broadcast onto those of ``slots``)."""
    if other_slots.shape[-1] != slots.shape[-1]:
        raise DataError(f"slot widths differ: {slots.shape[-1]} and {other_slots.shape[-1]}")
    i, j = _index(i, slots.shape[-2]), _index(j, other_slots.shape[-2], "source slot")
    out = slots.clone()
    out[..., i, :] = other_slots[..., j, :]
    return out


def insert_slot(slots: Tensor, new_slot: Tensor, position: int | None = None) -> Tensor:
    """slots [..., K, D] + new_slot [D] (or [..., D]) -> [..., K + 1, D], inserted before ``position``
    (default: appended last; the decoders do not care about slot order)."""
    k, d = slots.shape[-2:]
    if new_slot.shape[-1] != d:
        raise DataError(f"slot widths differ: {d} and {new_slot.shape[-1]}")
    new = new_slot.to(slots.dtype).expand(*slots.shape[:-2], d).unsqueeze(-2)
    pos = k if position is None else _index(position, k + 1, "position")
    return torch.cat([slots[..., :pos, :], new, slots[..., pos:, :]], dim=-2)


# -------------------------------------------------------------------------------------------------- decode


def load_autoencoder_of(model):
    """The frozen image autoencoder a model decodes through (LSD's), in eval mode; None for the others."""
    return slot_model(model).image_autoencoder


def grow_region(region: Tensor, pixels: int) -> Tensor:
    """bool region [B, H, W] grown by ``pixels`` in every direction (a square dilation)."""
    if pixels <= 0:
        return region
    return F.max_pool2d(region[:, None].float(), 2 * pixels + 1, 1, pixels)[:, 0] > 0


@torch.no_grad()
def decode_slots(
    model,
    slots: Tensor,
    steps: int = 25,
    sampler: str = "dpm",
    seed: int = 0,
    autoencoder=None,
    guidance: float = 1.0,
    keep_from: Tensor | None = None,
    region: Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """slots [B, K', D] (or [K', D]: B = 1) -> images [B, 3, R, R] in [-1, 1]; K' may be any number.

    LSD: reverse diffusion from noise drawn with ``seed`` (``steps``, ``sampler``, ``guidance`` as in
    :meth:`LatentSlotDiffusion.generate`), then the image autoencoder's decoder (loaded from the model's config
    unless given). The same seed gives the same noise, so two slot sets decoded with one seed differ only by
    their slots. Object discovery: the spatial broadcast decoder's reconstruction (deterministic).

    ``keep_from`` images [B, 3, R, R] with ``region`` bool [B, R, R] (True = decode): only the region is decoded
    from the slots, the rest is ``keep_from``'s. LSD: blended sampling over the latents of ``keep_from`` (every
    latent cell that touches the region is generated), so the decoded region fits its surroundings, and the input's
    pixels outside those cells; object discovery: the decoder's image pasted into ``keep_from`` inside the region.
    """
    model = slot_model(model)
    if slots.ndim == 2:
        slots = slots[None]
    if slots.ndim != 3 or slots.shape[1] == 0:
        raise DataError(f"expected slots [B, K, D] with K >= 1, got {list(slots.shape)}")
    if slots.shape[-1] != model.slot_width:
        raise DataError(
            f"the slots have width {slots.shape[-1]} but the model's are {model.slot_width} wide "
            "(slots from another model?)"
        )
    if (keep_from is None) != (region is None):
        raise ValueError("give both keep_from and region, or neither")
    device = next(model.parameters()).device
    slots = slots.to(device, torch.float32)
    if keep_from is not None and region is not None:
        r = model.resolution
        if keep_from.shape != (slots.shape[0], 3, r, r) or region.shape != (slots.shape[0], r, r):
            raise DataError(
                f"keep_from {list(keep_from.shape)} and region {list(region.shape)} must be "
                f"[{slots.shape[0]}, 3, {r}, {r}] and [{slots.shape[0]}, {r}, {r}]"
            )
        keep_from, region = keep_from.to(device, torch.float32), region.to(device)
    if autoencoder is not None:
        model.use_autoencoder(autoencoder)
    g = torch.Generator(device=device).manual_seed(seed)
    return model.render(
        slots,
        build(Sampling, {"steps": steps, "sampler": sampler, "guidance": guidance}),
        g,
        keep_from,
        region,
        progress,
    )


# ---------------------------------------------------------------------------------------------- one edit

EDITS = ("remove", "replace", "insert", "keep")


@dataclass
class EditResult:
    """One edit of one image's slots, decoded before and after with the same noise."""

    what: str  # e.g. "removed slot 3"
    slot: int | None  # the image's edited slot (remove, replace), else None
    source_slot: int | None  # the source image's slot (replace, insert)
    images: Tensor  # [1 or 2, 3, R, R]: the image (and the source image)
    slots: Tensor  # [K, D] the image's slots
    edited: Tensor  # [K', D] after the edit
    masks: Tensor  # [1 or 2, K, R, R] the slot masks of the image (and the source)
    changed: Tensor  # bool [R, R]: where the edit acts (the removed or inserted slots' pixels)
    reconstruction: Tensor  # [1, 3, R, R] decoded from the slots
    after: Tensor  # [1, 3, R, R] decoded from the edited slots
    kept: Tensor | None = None  # [1, 3, R, R] only the grown changed region redrawn, the rest from the input
    region: Tensor | None = None  # bool [1, R, R] the grown region (with keep_rest)


@torch.no_grad()
def edit_image(
    model,
    image: Tensor,
    op: str,
    slot: int | None = None,
    pixel: tuple[int, int] | None = None,
    source: Tensor | None = None,
    source_slot: int | None = None,
    keep: list[int] | None = None,
    keep_rest: bool = False,
    grow: int = 2,
    sampling: Sampling | None = None,
    seed: int = 0,
    source_name: str = "the source image",
) -> EditResult:
    """Edit ``image`` [3, R, R] in slot space and decode it before and after with the same seed.

    ``op``: "remove" slot ``slot`` (or the slot that holds ``pixel`` = (y, x)); "replace" slot ``slot`` by slot
    ``source_slot`` of the image ``source``; "insert" slot ``source_slot`` of ``source``; "keep" only the slots
    ``keep``. ``keep_rest``: also redraw only the edited region (grown by ``grow`` pixels) and keep the input
    elsewhere (LSD: blended sampling; the autoencoder: its decoded region pasted into the input)."""
    model = slot_model(model)
    if op not in EDITS:
        raise DataError(f"unknown edit {op!r}: use one of {', '.join(EDITS)}")
    if (op in ("replace", "insert")) != (source is not None):
        raise DataError(f"the edit {op!r} {'needs' if op in ('replace', 'insert') else 'takes no'} source image")
    if grow < 0:
        raise DataError(f"grow must be >= 0, got {grow}")
    sampling = sampling or Sampling()
    device = next(model.parameters()).device
    images = torch.stack([image] + ([source] if source is not None else [])).to(device)
    # each image encoded alone with slot noise from ``seed``: slot j of an image is the same slot in every edit, in
    # `slotlab app` and in a remove on that image alone, whichever image it is paired with
    encoded = [encode_slots(model, im[None], torch.Generator(device=device).manual_seed(seed)) for im in images]
    enc = EncodedSlots(torch.cat([e.slots for e in encoded]), torch.cat([e.masks for e in encoded]), encoded[0].source)
    slots, masks = enc.slots[0], enc.masks[0]
    i = j = None
    if op == "remove":
        i = pick_slot(masks, index=slot, pixel=pixel)
        edited, what, changed = remove_slot(slots, i), f"removed slot {i}", slot_segment(masks, i)
    elif op == "replace":
        if slot is None or source_slot is None:
            raise DataError("replacing a slot needs the slot and the source image's slot")
        i, j = pick_slot(masks, index=slot), pick_slot(enc.masks[1], index=source_slot)
        edited, what = replace_slot(slots, i, enc.slots[1], j), f"replaced slot {i} by slot {j} of {source_name}"
        changed = slot_segment(masks, i) | slot_segment(enc.masks[1], j)  # where the old and the new object were
    elif op == "insert":
        if source_slot is None:
            raise DataError("inserting a slot needs the source image's slot")
        j = pick_slot(enc.masks[1], index=source_slot)
        edited, what = insert_slot(slots, enc.slots[1, j]), f"inserted slot {j} of {source_name}"
        changed = slot_segment(enc.masks[1], j)
    else:
        chosen = sorted({_index(k, slots.shape[0]) for k in keep or []})
        if not chosen:
            raise DataError("keep at least one slot")
        edited, what = slots[chosen], f"kept slots {', '.join(map(str, chosen))}"
        changed = ~torch.isin(masks.argmax(0), torch.tensor(chosen, device=masks.device))  # the dropped slots' pixels
    decode: dict[str, Any] = dict(steps=sampling.steps, sampler=sampling.sampler, seed=seed, guidance=sampling.guidance)
    recon = decode_slots(model, slots[None], **decode)  # the same seed: the same noise for both
    after = decode_slots(model, edited[None], **decode)
    result = EditResult(what, i, j, images, slots, edited, enc.masks, changed, recon, after)
    if keep_rest:
        result.region = grow_region(changed[None], grow)
        result.kept = decode_slots(model, edited[None], **decode, keep_from=images[:1], region=result.region)
    return result


def edit_sheet(result: EditResult, scale: int = 1, source_name: str = "source image"):
    """The PNG sheet of an edit: input | the edited slot's region | reconstruction | edited [| rest kept]
    [| source image | source slot's region]."""
    from slotlab.data.transforms import to_uint8
    from slotlab.visualize import column_sheet

    images, masks = result.images, result.masks
    region = (images[:, None] * masks[:, :, None]).cpu()  # [B, K, 3, R, R] each slot's region on grey
    columns = [("input", to_uint8(images[:1].cpu()))]
    if result.slot is not None:
        columns.append((f"slot {result.slot}", to_uint8(region[:1, result.slot])))
    columns += [("reconstruction", to_uint8(result.reconstruction.cpu())), ("edited", to_uint8(result.after.cpu()))]
    if result.kept is not None:
        columns.append(("rest kept", to_uint8(result.kept.cpu())))
    if len(images) > 1:
        columns += [
            (source_name, to_uint8(images[1:].cpu())),
            (f"its slot {result.source_slot}", to_uint8(region[1:, result.source_slot])),
        ]
    return column_sheet(columns, scale)
