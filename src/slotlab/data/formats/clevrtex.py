"""CLEVRTex (Karazija et al., 2021; https://www.robots.ox.ac.uk/~vgg/data/clevrtex/).

Layout of one variant (``full``, ``outd``, ``camo``, ``pbg``, ``vbg``, ``grassbg``)::

    ROOT/clevrtex_<variant>/<i // 1000>/CLEVRTEX_<variant>_<i:06d>.png       RGBA (or RGB) image, 240 x 320
                                       /CLEVRTEX_<variant>_<i:06d>_flat.png  palette PNG: value = object index
                                       /CLEVRTEX_<variant>_<i:06d>.json      scene metadata (optional here)

The ``_flat`` PNG's pixel values (palette indices, not the palette's colours) are the labels: 0 = background,
k = object k. Splits follow the official loader, by position in the sorted indices present: test = first 10 %,
val = next 10 %, train = the remaining 80 % (:func:`clevrtex_split`).

The models' usual preprocessing, a centre crop of 192 (:data:`CLEVRTEX_CROP`) then a resize to 128, is left to
the converter: :func:`read_clevrtex` yields the images as stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from slotlab.data.formats.image_folder import decode_image
from slotlab.errors import DataError

CLEVRTEX_URL = "https://www.robots.ox.ac.uk/~vgg/data/clevrtex/"
CLEVRTEX_VARIANTS = ("full", "outd", "camo", "pbg", "vbg", "grassbg")
CLEVRTEX_SPLITS = {"test": (0.0, 0.1), "val": (0.1, 0.2), "train": (0.2, 1.0), "all": (0.0, 1.0)}
CLEVRTEX_CROP = [24, 64, 192, 192]  # centre crop 192 of 240 x 320: [top, left, height, width]


def _check_variant(variant: str) -> None:
    if variant not in CLEVRTEX_VARIANTS:
        raise DataError(f"unknown CLEVRTex variant {variant!r}; known: {', '.join(CLEVRTEX_VARIANTS)}")


def clevrtex_dir(root: str | Path, variant: str = "full") -> Path:
    """The ``clevrtex_<variant>`` folder: ``root`` itself or its child of that name."""
    _check_variant(variant)
    root = Path(root)
    name = f"clevrtex_{variant}"
    for d in (root / name, root):
        if d.is_dir() and d.name == name:
            return d
    raise DataError(
        f"CLEVRTex {variant} not found: no {root / name}; download it from {CLEVRTEX_URL} and unpack "
        f"so that {root / name}/0/CLEVRTEX_{variant}_000000.png exists"
    )


def _stem(folder: Path, variant: str, index: int) -> Path:
    return folder / str(index // 1000) / f"CLEVRTEX_{variant}_{index:06d}"


def clevrtex_indices(root: str | Path, variant: str = "full") -> list[int]:
    """The sorted indices of the images present (no image is opened)."""
    folder = clevrtex_dir(root, variant)
    prefix = f"CLEVRTEX_{variant}_"
    indices = sorted(
        int(p.name[len(prefix) : -4])
        for p in folder.glob(f"*/{prefix}??????.png")
        if p.name[len(prefix) : -4].isdigit()
    )
    if not indices:
        raise DataError(f"no CLEVRTex images in {folder} (expected {folder}/0/{prefix}000000.png)")
    return indices


def clevrtex_split(indices: Sequence[int], split: str) -> list[int]:
    """The indices of ``split`` ("train", "val", "test" or "all") by position in the sorted ``indices``."""
    if split not in CLEVRTEX_SPLITS:
        raise DataError(f"CLEVRTex split must be one of {', '.join(CLEVRTEX_SPLITS)}, got {split!r}")
    ordered = sorted(indices)
    lo, hi = CLEVRTEX_SPLITS[split]
    return ordered[int(lo * len(ordered)) : int(hi * len(ordered))]


def count_clevrtex(root: str | Path, variant: str = "full", split: str = "train") -> int:
    """How many examples :func:`read_clevrtex` yields."""
    return len(clevrtex_split(clevrtex_indices(root, variant), split))


def read_clevrtex(root: str | Path, variant: str = "full", split: str = "train", start: int = 0) -> Iterator[dict]:
    """Yield ``{"image": uint8 [H, W, 3], "labels": uint8 [H, W], "index": int, "path": str[, "scene": dict]}``.

    Examples before ``start`` (within the split) are skipped without being opened.
    """
    folder = clevrtex_dir(root, variant)
    for index in clevrtex_split(clevrtex_indices(folder, variant), split)[start:]:
        stem = _stem(folder, variant, index)
        image_path, flat_path, json_path = (stem.with_name(stem.name + s) for s in (".png", "_flat.png", ".json"))
        image = decode_image(image_path, str(image_path))
        if not flat_path.is_file():
            raise DataError(f"CLEVRTex mask file not found: {flat_path}")
        labels = decode_image(flat_path, str(flat_path), mode=None)  # palette indices, not colours
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise DataError(
                f"{flat_path}: expected a palette or grayscale PNG, got {labels.dtype} {list(labels.shape)}"
            )
        if labels.shape != image.shape[:2]:
            raise DataError(f"{flat_path}: mask is {list(labels.shape)} but the image is {list(image.shape[:2])}")
        example = {"image": image, "labels": labels, "index": index, "path": str(image_path)}
        if json_path.is_file():
            try:
                example["scene"] = json.loads(json_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{json_path}: not valid JSON ({e})") from None
        yield example


def _palette(n: int = 256) -> list[int]:
    """A palette whose colours differ from their indices (so a reader returning colours is caught)."""
    k = np.arange(n)
    colours = np.stack([(k * 97 + 31) % 256, (k * 57 + 200) % 256, (k * 13 + 90) % 256], 1)
    return colours.astype(np.uint8).ravel().tolist()


def write_clevrtex(
    root: str | Path, variant: str, images: np.ndarray, labels: np.ndarray, start_index: int = 0
) -> Path:
    """Write ``images`` uint8 [N, H, W, 3] and ``labels`` uint8 [N, H, W] in the CLEVRTex layout under ``root``.

    Images become RGBA PNGs (alpha 255), labels palette PNGs, plus a small JSON per image. Returns the
    ``clevrtex_<variant>`` folder.
    """
    _check_variant(variant)
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"CLEVRTex images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    if labels.dtype != np.uint8 or labels.shape != images.shape[:3]:
        raise DataError(
            f"CLEVRTex labels must be uint8 {list(images.shape[:3])}, got {labels.dtype} {list(labels.shape)}"
        )
    folder = Path(root) / f"clevrtex_{variant}"
    palette = _palette()
    alpha = np.full((*images.shape[1:3], 1), 255, np.uint8)
    for i, (image, label) in enumerate(zip(images, labels)):
        index = start_index + i
        stem = _stem(folder, variant, index)
        stem.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate([image, alpha], -1), "RGBA").save(stem.with_name(stem.name + ".png"))
        flat = Image.frombytes("P", label.shape[::-1], label.tobytes())  # the values are the palette indices
        flat.putpalette(palette)
        flat.save(stem.with_name(stem.name + "_flat.png"))
        scene = {
            "image_index": index,
            "image_filename": stem.name + ".png",
            "objects": [{"index": int(k)} for k in np.unique(label) if k],
        }
        stem.with_name(stem.name + ".json").write_text(json.dumps(scene))
    return folder
