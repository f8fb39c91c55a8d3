"""Scene editing in slot space (LSD paper, section 4): encode images into slots, then remove a slot (object
removal), replace one with a slot of another image (swapping objects, backgrounds, face parts) or insert one
(object insertion), and decode the edited set: by reverse diffusion from noise for Latent Slot Diffusion, by the
spatial broadcast decoder for the Slot Attention autoencoder. Any number of slots can be decoded.

Also :func:`compose`: new scenes from one member slot of each of several visual concepts
(:class:`slotlab.concepts.ConceptLibrary`).

Shapes: B batch, K slots, D slot width, R image side, m mask side, N = side * side attention inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from slotlab.errors import ConfigError, DataError

if TYPE_CHECKING:
    from slotlab.concepts.library import ConceptLibrary

MASK_SOURCES = ("auto", "alpha", "attention")


@dataclass
class EncodedSlots:
    slots: Tensor  # [B, K, D]
    masks: Tensor  # [B, K, m, m] soft masks in [0, 1] that sum to 1 over the slots at every pixel
    source: str  # "alpha" (the autoencoder decoder's masks) or "attention" (last-iteration Slot Attention)


def model_kind(model) -> str:
    """"lsd" (Latent Slot Diffusion) or "object_discovery" (Slot Attention autoencoder); else a DataError."""
    from slotlab.models.lsd import LatentSlotDiffusion
    from slotlab.models.object_discovery import SlotAutoencoder

    if isinstance(model, LatentSlotDiffusion):
        return "lsd"
    if isinstance(model, SlotAutoencoder):
        return "object_discovery"
    raise DataError(f"{type(model).__name__}: slots can be collected, edited and decoded only with a Latent Slot "
                    "Diffusion or an object discovery (Slot Attention autoencoder) model")


def resize_masks(masks: Tensor, size: int) -> Tensor:
    """Masks [B, K, h, w] -> [B, K, size, size]: area averaging to shrink, bilinear to grow (both keep the
    masks summing to 1 over K)."""
    if masks.shape[-2:] == (size, size):
        return masks
    mode = "area" if size < masks.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(masks.float(), size=(size, size), mode=mode, **kwargs)


def attention_masks(attn: Tensor, size: int) -> Tensor:
    """Last-iteration attention [B, N, K] (N = side * side, softmax over K) -> masks [B, K, size, size],
    upsampled bilinearly as in :func:`slotlab.evaluation.attention_labels`."""
    b, n, k = attn.shape
    side = math.isqrt(n)
    if side * side != n:
        raise DataError(f"attention over {n} inputs is not a square grid")
    return resize_masks(attn.transpose(1, 2).reshape(b, k, side, side).float(), size)


@torch.no_grad()
def encode_slots(model, images: Tensor, generator: torch.Generator | None = None, mask_size: int | None = None,
                 mask_source: str = "auto") -> EncodedSlots:
    """images [B, 3, R, R] in [-1, 1] -> slots [B, K, D] and masks [B, K, m, m] (m = ``mask_size``, default R).

    ``mask_source``: "alpha" decodes the slots and takes the broadcast decoder's alpha masks (the Slot Attention
    paper's segmentation; object discovery models only), "attention" takes Slot Attention's last-iteration
    attention, upsampled bilinearly (the only choice for LSD, whose decoder has no masks). "auto": alpha for the
    autoencoder, attention for LSD.
    """
    kind = model_kind(model)
    if mask_source not in MASK_SOURCES:
        raise ConfigError(f"unknown mask source {mask_source!r}: use one of {', '.join(MASK_SOURCES)}")
    if mask_source == "auto":
        mask_source = "alpha" if kind == "object_discovery" else "attention"
    if mask_source == "alpha" and kind != "object_discovery":
        raise ConfigError("alpha masks need an object discovery model; LSD's masks come from the attention")
    size = mask_size or images.shape[-1]
    enc = model.encode(images, generator=generator)
    if mask_source == "alpha":
        masks = resize_masks(model.decode(enc.slots).alpha[:, :, 0].float(), size)
    else:
        masks = attention_masks(enc.attn[:, -1], size)
    return EncodedSlots(enc.slots, masks, mask_source)


# ---------------------------------------------------------------------------------------------- slot edits


def _index(i: int, k: int, what: str = "slot") -> int:
    """``i`` in -k..k-1 -> 0..k-1, else a DataError."""
    if not -k <= int(i) < k:
        raise DataError(f"{what} {i} does not exist: there are {k} slots (0 to {k - 1})")
    return int(i) % k


def pick_slot(masks: Tensor, index: int | None = None, pixel: tuple[int, int] | None = None,
              size: int | None = None) -> int:
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
    """LSD's frozen image autoencoder (from ``model.config.autoencoder``), in eval mode; None for other models."""
    if model_kind(model) != "lsd":
        return None
    from slotlab.models.image_autoencoder import load_image_autoencoder

    return load_image_autoencoder(model.config.autoencoder).to(next(model.parameters()).device).eval()


def grow_region(region: Tensor, pixels: int) -> Tensor:
    """bool region [B, H, W] grown by ``pixels`` in every direction (a square dilation)."""
    if pixels <= 0:
        return region
    return F.max_pool2d(region[:, None].float(), 2 * pixels + 1, 1, pixels)[:, 0] > 0


@torch.no_grad()
def decode_slots(model, slots: Tensor, steps: int = 25, sampler: str = "dpm", seed: int = 0, autoencoder=None,
                 guidance: float = 1.0, keep_from: Tensor | None = None, region: Tensor | None = None) -> Tensor:
    """slots [B, K', D] (or [K', D]: B = 1) -> images [B, 3, R, R] in [-1, 1]; K' may be any number.

    LSD: reverse diffusion from noise drawn with ``seed`` (``steps``, ``sampler``, ``guidance`` as in
    :meth:`LatentSlotDiffusion.generate`), then the image autoencoder's decoder (loaded from the model's config
    unless given). The same seed gives the same noise, so two slot sets decoded with one seed differ only by
    their slots. Object discovery: the spatial broadcast decoder's reconstruction (deterministic).

    ``keep_from`` images [B, 3, R, R] with ``region`` bool [B, R, R] (True = decode): only the region is decoded
    from the slots, the rest is ``keep_from``'s. LSD: blended sampling over the latents of ``keep_from`` (every
    latent cell that touches the region is generated), so the decoded region fits its surroundings; object
    discovery: the decoder's image pasted into ``keep_from`` inside the region.
    """
    kind = model_kind(model)
    if slots.ndim == 2:
        slots = slots[None]
    if slots.ndim != 3 or slots.shape[1] == 0:
        raise DataError(f"expected slots [B, K, D] with K >= 1, got {list(slots.shape)}")
    if slots.shape[-1] != model.config.slot_width:
        raise DataError(f"the slots have width {slots.shape[-1]} but the model's are {model.config.slot_width} wide "
                        "(slots from another model?)")
    if (keep_from is None) != (region is None):
        raise ValueError("give both keep_from and region, or neither")
    device = next(model.parameters()).device
    slots = slots.to(device, torch.float32)
    if keep_from is not None:
        r = model.config.resolution
        if keep_from.shape != (slots.shape[0], 3, r, r) or region.shape != (slots.shape[0], r, r):
            raise DataError(f"keep_from {list(keep_from.shape)} and region {list(region.shape)} must be "
                            f"[{slots.shape[0]}, 3, {r}, {r}] and [{slots.shape[0]}, {r}, {r}]")
        keep_from, region = keep_from.to(device, torch.float32), region.to(device)
    if kind == "object_discovery":
        images = model.decode(slots).reconstruction.clamp(-1, 1)
        return images if region is None else torch.where(region[:, None], images, keep_from)
    autoencoder = autoencoder if autoencoder is not None else load_autoencoder_of(model)
    g = torch.Generator(device=device).manual_seed(seed)
    known = keep = None
    if region is not None:
        known = autoencoder.encode(keep_from, sample=False).float()
        keep = 1 - F.adaptive_max_pool2d(region[:, None].float(), known.shape[-2:])
    latents = model.generate(slots, steps=steps, sampler=sampler, guidance=guidance, generator=g, known=known,
                             keep=keep)
    return autoencoder.decode(latents.float(), clamp=True).float()


# ------------------------------------------------------------------------------------------------- compose


def _draw(n: int, g: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=g))


def compose(model, library: ConceptLibrary, concepts: list[int | list[int]] | None = None, n: int = 8,
            seed: int = 0, *, num_concepts: int = 4, top: int | None = None, steps: int = 25, sampler: str = "dpm",
            guidance: float = 1.0, autoencoder=None) -> tuple[Tensor, dict]:
    """``n`` new scenes, each decoded from one member slot of each of several concepts of ``library``.

    concepts: concept ids (every scene takes one slot of each), where an item may be a list of ids, a group
    (every scene takes one concept of the group at random); None: every scene takes ``num_concepts`` distinct
    non-empty concepts at random. Members are drawn uniformly from the ``top`` nearest to their centroid
    (default: all members). Returns images [n, 3, R, R] in [-1, 1] and the prompt: per scene the concept ids and
    the (image index, slot index) of every member slot used, with the seed and sampling settings.
    """
    if concepts is not None:
        if len(concepts) == 0:
            raise DataError("no concepts given")
        for c in concepts:
            group = c if isinstance(c, (list, tuple)) else [c]
            if not group:
                raise DataError("an empty group of concepts")
            for cid in group:
                library.check_concept(cid, nonempty=True)
    nonempty = (library.sizes > 0).nonzero().flatten()
    if concepts is None and not 1 <= num_concepts <= len(nonempty):
        raise DataError(f"cannot draw {num_concepts} distinct concepts: the library has {len(nonempty)} non-empty")
    if n < 1:
        raise DataError("compose at least one scene")
    if top is not None and top < 1:
        raise DataError(f"top must be at least 1, got {top}")
    g = torch.Generator().manual_seed(seed)
    rows, scenes = [], []
    for _ in range(n):
        if concepts is None:
            picks = nonempty[torch.randperm(len(nonempty), generator=g)[:num_concepts]].tolist()
        else:
            picks = [int(c[_draw(len(c), g)]) if isinstance(c, (list, tuple)) else int(c) for c in concepts]
        members = []
        for c in picks:
            pool = library.nearest_members(c, top)
            members.append(int(pool[_draw(len(pool), g)]))
        rows.append(members)
        scenes.append({"concepts": picks, "members": [[int(library.image_index[r]), int(library.slot_index[r])]
                                                      for r in members]})
    slots = library.slots[torch.tensor(rows)]  # [n, C', D]
    images = decode_slots(model, slots, steps, sampler, seed, autoencoder, guidance)
    prompt = {"seed": seed, "concepts": concepts, "num_concepts": None if concepts else num_concepts, "top": top,
              "steps": steps, "sampler": sampler, "guidance": guidance, "scenes": scenes,
              "members_are": "[image index, slot index] in the library's dataset"}
    if model_kind(model) == "object_discovery":
        prompt.update(steps=None, sampler=None, guidance=None)  # the broadcast decoder does not sample
    return images, prompt
