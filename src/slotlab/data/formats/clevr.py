"""CLEVR v1.0 folder format: reader, writer and set-prediction targets.

Layout (the real release, 480x320 RGBA PNGs)::

    ROOT/images/{split}/CLEVR_{split}_{i:06d}.png
    ROOT/scenes/CLEVR_{split}_scenes.json   {"info": {...}, "scenes": [scene, ...]}

A scene is ``{"image_index", "image_filename", "split", "objects", "relationships", "directions"}``; an object is
``{"color", "size", "rotation", "shape", "3d_coords", "material", "pixel_coords"}`` with x, y in [-3, 3].
The real ``test`` split has no scenes file: :class:`ClevrFolder` then lists the PNGs and has no targets.

Set-prediction target per object (19 values, Slot Attention paper)::

    (3d_coords + 3) / 6 (3) | size (2) | material (2) | shape (3) | colour (8) | 1.0

zero rows pad a scene to ``max_objects``. Every error is a :class:`~slotlab.errors.DataError` with a one-line message.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slotlab.errors import DataError
from slotlab.io import read_json

__all__ = [
    "CLEVR_URL",
    "COLORS",
    "COLOR_RGB",
    "MATERIALS",
    "NUM_TARGET_FEATURES",
    "SHAPES",
    "SIZES",
    "SIZE_RADIUS",
    "ClevrFolder",
    "image_filename",
    "load_clevr_scenes",
    "scene_targets",
    "scenes_path",
    "scenes_targets",
    "write_clevr_folder",
    "write_clevr_images",
    "write_clevr_scenes_json",
]

#: Label orders of the set-prediction target (Slot Attention's official code).
COLORS: list[str] = ["gray", "blue", "brown", "yellow", "red", "green", "purple", "cyan"]
MATERIALS: list[str] = ["rubber", "metal"]
SHAPES: list[str] = ["cube", "sphere", "cylinder"]
SIZES: list[str] = ["small", "large"]
#: sRGB values CLEVR's renderer gives each colour (``properties.json``).
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
#: Object "radius" per size name. CLEVR scales cubes by radius / sqrt(2), so a cube's centre sits at that height.
SIZE_RADIUS: dict[str, float] = {"large": 0.7, "small": 0.35}
NUM_TARGET_FEATURES = 19
CLEVR_URL = "https://dl.fbaipublicfiles.com/clevr/CLEVR_v1.0.zip"

_OBJECT_FIELDS = ("color", "size", "rotation", "shape", "3d_coords", "material", "pixel_coords")
_SCENE_FIELDS = ("image_index", "image_filename", "objects")
_VOCAB = {"color": COLORS, "size": SIZES, "material": MATERIALS, "shape": SHAPES}
_INDEX = {field: {word: i for i, word in enumerate(words)} for field, words in _VOCAB.items()}
# Column where each one-hot group starts in the 19-dim target.
_OFFSET = {"size": 3, "material": 5, "shape": 7, "color": 10}
_REAL_COLUMN = 18


def scenes_path(root: str | Path, split: str) -> Path:
    """``ROOT/scenes/CLEVR_{split}_scenes.json``."""
    return Path(root) / "scenes" / f"CLEVR_{split}_scenes.json"


def image_filename(split: str, index: int) -> str:
    """``CLEVR_{split}_{index:06d}.png``."""
    return f"CLEVR_{split}_{index:06d}.png"


# ----------------------------------------------------------------------------------------------- targets


def scenes_targets(scenes: Sequence[dict], max_objects: int = 10) -> np.ndarray:
    """Set-prediction targets of many scenes: float32 [N, max_objects, 19] (see the module docstring).

    Raises DataError for a scene with more than ``max_objects`` objects or an unknown vocabulary word.
    """
    try:
        counts = np.array([len(s["objects"]) for s in scenes], dtype=np.int64)
    except (KeyError, TypeError):
        raise DataError("every scene needs an 'objects' list") from None
    too_many = np.flatnonzero(counts > max_objects)
    if too_many.size:
        i = int(too_many[0])
        raise DataError(f"scene {i} has {counts[i]} objects, more than max_objects = {max_objects}")
    out = np.zeros((len(scenes), max_objects, NUM_TARGET_FEATURES), dtype=np.float32)
    objects = [o for s in scenes for o in s["objects"]]
    if not objects:
        return out
    scene_idx = np.repeat(np.arange(len(scenes)), counts)
    row_idx = np.arange(len(objects)) - np.repeat(np.cumsum(counts) - counts, counts)
    try:
        coords = np.array([o["3d_coords"] for o in objects], dtype=np.float32).reshape(len(objects), 3)
        cols = np.array(
            [[_OFFSET[f] + _INDEX[f][o[f]] for f in ("size", "material", "shape", "color")] for o in objects],
            dtype=np.int64,
        )
    except KeyError as e:
        raise DataError(f"object without field or with an unknown vocabulary word: {e}") from None
    except (TypeError, ValueError) as e:
        raise DataError(f"3d_coords must be three numbers per object ({e})") from None
    out[scene_idx, row_idx, :3] = (coords + 3.0) / 6.0
    cols = np.concatenate([cols, np.full((len(objects), 1), _REAL_COLUMN)], axis=1)  # [M, 5]
    out[np.repeat(scene_idx, 5), np.repeat(row_idx, 5), cols.ravel()] = 1.0
    return out


def scene_targets(scene: dict, max_objects: int = 10) -> np.ndarray:
    """Set-prediction target of one scene: float32 [max_objects, 19], zero rows after its objects."""
    return scenes_targets([scene], max_objects)[0]


# ----------------------------------------------------------------------------------------------- scenes


def _fetch_hint(path: Path) -> str:
    return f"fetch CLEVR v1.0 from {CLEVR_URL} and unzip it so that {path} exists"


def _validate(scenes: Any, path: Path) -> None:
    if not isinstance(scenes, list):
        raise DataError(f"{path}: 'scenes' must be a list, got {type(scenes).__name__}")
    for i, scene in enumerate(scenes):
        if not isinstance(scene, dict):
            raise DataError(f"{path}: scene {i} is not an object")
        for field in _SCENE_FIELDS:
            if field not in scene:
                raise DataError(f"{path}: scene {i}: missing field '{field}'")
        if not isinstance(scene["objects"], list):
            raise DataError(f"{path}: scene {i}: 'objects' must be a list")
        for j, obj in enumerate(scene["objects"]):
            if not isinstance(obj, dict):
                raise DataError(f"{path}: scene {i}: object {j} is not an object")
            for field in _OBJECT_FIELDS:
                if field not in obj:
                    raise DataError(f"{path}: scene {i}: object {j}: missing field '{field}'")
            for field, words in _VOCAB.items():
                if obj[field] not in _INDEX[field]:
                    raise DataError(
                        f"{path}: scene {i}: object {j}: unknown {field} {obj[field]!r} "
                        f"(expected one of {', '.join(words)})"
                    )
            xyz = obj["3d_coords"]
            if not (isinstance(xyz, list) and len(xyz) == 3 and all(isinstance(v, (int, float)) for v in xyz)):
                raise DataError(f"{path}: scene {i}: object {j}: '3d_coords' must be three numbers, got {xyz!r}")


def load_clevr_scenes(root: str | Path, split: str) -> list[dict]:
    """Read and validate ``ROOT/scenes/CLEVR_{split}_scenes.json``; returns its list of scene dicts."""
    path = scenes_path(root, split)
    data = read_json(path, f"CLEVR scenes file not found: {path}; {_fetch_hint(path)}")
    if not isinstance(data, dict) or "scenes" not in data:
        raise DataError(f"{path}: expected an object with a 'scenes' list")
    _validate(data["scenes"], path)
    return data["scenes"]


# ----------------------------------------------------------------------------------------------- images


def _read_png(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] (alpha dropped)."""
    if not path.is_file():
        raise DataError(f"CLEVR image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split())
        raise DataError(f"{path}: not a readable image ({reason})") from None
    return np.asarray(rgb, dtype=np.uint8)


class ClevrFolder:
    """One split of a CLEVR v1.0 folder.

    ``scenes`` is the validated scene list, or None where the scenes file is absent (the real ``test`` split);
    set ``require_scenes`` to make its absence an error. Images are named by the scenes' ``image_filename``, or,
    without scenes, are the sorted ``*.png`` of ``ROOT/images/{split}``.
    """

    def __init__(self, root: str | Path, split: str, require_scenes: bool = False) -> None:
        self.root = Path(root)
        self.split = split
        self.image_dir = self.root / "images" / split
        self.scenes: list[dict] | None = None
        if require_scenes or scenes_path(root, split).is_file():
            self.scenes = load_clevr_scenes(root, split)
            self._files = [str(s["image_filename"]) for s in self.scenes]
        else:
            if not self.image_dir.is_dir():
                raise DataError(f"CLEVR image folder not found: {self.image_dir}; {_fetch_hint(self.image_dir)}")
            self._files = sorted(p.name for p in self.image_dir.glob("*.png"))
            if not self._files:
                raise DataError(f"{self.image_dir}: no .png images and no scenes file {scenes_path(root, split)}")

    def __len__(self) -> int:
        return len(self._files)

    def image_path(self, i: int) -> Path:
        return self.image_dir / self._files[i]

    def read_image(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 [H, W, 3]."""
        return _read_png(self.image_path(i))

    def read_images(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images as uint8 [len(indices), H, W, 3]; all must have the same size."""
        images = [self.read_image(int(i)) for i in indices]
        if images and any(im.shape != images[0].shape for im in images):
            sizes = sorted({im.shape[:2] for im in images})
            raise DataError(f"{self.image_dir}: images of different sizes {sizes} cannot be stacked")
        if not images:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        return np.stack(images)

    def scene(self, i: int) -> dict | None:
        return None if self.scenes is None else self.scenes[i]

    def targets(self, max_objects: int = 10) -> np.ndarray | None:
        """float32 [N, max_objects, 19] set-prediction targets, or None without scenes."""
        return None if self.scenes is None else scenes_targets(self.scenes, max_objects)

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict | None]]:
        """Yields (uint8 [H, W, 3] image, scene dict or None)."""
        for i in range(len(self)):
            yield self.read_image(i), self.scene(i)


# ----------------------------------------------------------------------------------------------- writer


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_clevr_images(root: str | Path, split: str, images: np.ndarray, start_index: int = 0) -> list[str]:
    """Write uint8 [N, H, W, 3] as RGBA PNGs (alpha 255) ``CLEVR_{split}_{start_index + i:06d}.png``.

    Returns the file names.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    folder = Path(root) / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    alpha = np.full((*images.shape[1:3], 1), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        name = image_filename(split, start_index + i)
        Image.fromarray(np.concatenate([image, alpha], axis=-1)).save(folder / name)
        names.append(name)
    return names


def write_clevr_scenes_json(root: str | Path, split: str, scenes: Sequence[dict], info: dict | None = None) -> Path:
    """Write ``ROOT/scenes/CLEVR_{split}_scenes.json`` as ``{"info": info, "scenes": scenes}``; returns its path."""
    if info is None:
        info = {
            "date": datetime.date.today().strftime("%m/%d/%Y"),
            "version": "1.0",
            "split": split,
            "license": "Creative Commons Attribution (CC-BY 4.0)",
        }
    path = scenes_path(root, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"info": info, "scenes": list(scenes)}, f, default=_json_default)
    return path


def write_clevr_folder(
    root: str | Path,
    split: str,
    images: np.ndarray,
    scenes: Sequence[dict],
    info: dict | None = None,
    start_index: int = 0,
) -> list[dict]:
    """Write images uint8 [N, H, W, 3] and their N scenes as a CLEVR v1.0 folder.

    Each scene is copied with ``image_index``, ``image_filename`` and ``split`` filled in; returns the copies.
    """
    if len(images) != len(scenes):
        raise DataError(f"{len(images)} images but {len(scenes)} scenes")
    names = write_clevr_images(root, split, images, start_index)
    out = [
        {**scene, "image_index": start_index + i, "image_filename": name, "split": split}
        for i, (scene, name) in enumerate(zip(scenes, names))
    ]
    write_clevr_scenes_json(root, split, out, info)
    return out
