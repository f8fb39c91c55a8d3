"""Plain folders of image files, and FFHQ.

Any set of files Pillow can read: a directory (searched recursively for files with an extension Pillow opens), a
glob pattern (``"data/**/*.jpg"``; ``**`` recurses) or an explicit list of paths. Paths are read in sorted order;
every image is converted to RGB (grayscale, palette and CMYK images are expanded, an alpha channel is dropped).
Images may differ in size: the converter resizes them.

FFHQ (https://github.com/NVlabs/ffhq-dataset) is laid out as ``ROOT/images1024x1024/<NN000>/<NNNNN>.png``
(70,000 images; ``thumbnails128x128`` has the same layout). By convention the first 60,000 file indices are
the training set and the remaining 10,000 the test set (:func:`ffhq_split`).

:func:`decode_image` is the one place Pillow errors become :class:`DataError`; the CLEVRTex and MOVi readers use
it too.
"""

from __future__ import annotations

import glob
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from slotlab.errors import DataError

FFHQ_URL = "https://github.com/NVlabs/ffhq-dataset"
FFHQ_TRAIN = 60_000  # file indices 0..59999 train, 60000..69999 test

_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def decode_image(source: str | Path | bytes, where: str, mode: str | None = "RGB") -> np.ndarray:
    """Decode one image file or in-memory image to a numpy array.

    ``mode``: a Pillow mode to convert to ("RGB" -> uint8 [H, W, 3]), or None to keep the stored values (a
    palette image then gives its palette indices, not colours). ``where`` names the image in the error raised when
    it does not decode.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            opened.load()
            img: Image.Image = opened.convert(mode) if mode is not None and opened.mode != mode else opened
            return np.array(img)
    except _PIL_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        reason = reason.replace(f" {str(source)!r}", "") if isinstance(source, (str, Path)) else reason
        raise DataError(f"{where}: not a readable image ({reason})") from None


def readable_extensions() -> set[str]:
    """The file extensions Pillow opens (".png", ".jpg", ...)."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def image_paths(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The sorted image files of a directory (recursive), a glob pattern or a list of paths. Raises if none."""
    if isinstance(source, (list, tuple)):
        paths = sorted(Path(p) for p in source)
        what = f"the {len(paths)} given paths"
    else:
        text = str(source)
        if Path(text).is_dir():
            exts = readable_extensions()
            paths = sorted(p for p in Path(text).rglob("*") if p.suffix.lower() in exts and p.is_file())
            what = f"directory {text}"
            if not paths:
                raise DataError(f"no image files in {what}")
        elif glob.has_magic(text):
            paths = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            what = f"pattern {text}"
            if not paths:
                raise DataError(f"no files match {what}")
        elif Path(text).is_file():
            paths, what = [Path(text)], text
        else:
            raise DataError(f"image folder not found: {text} (no such directory, file or glob pattern)")
    if not paths:
        raise DataError(f"no image files in {what}")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"image file not found: {missing[0]}")
    return paths


def count_images(source: str | Path | Sequence[str | Path]) -> int:
    """How many images :func:`read_image_folder` yields for ``source`` (nothing is decoded)."""
    return len(image_paths(source))


def read_image_folder(source: str | Path | Sequence[str | Path], start: int = 0) -> Iterator[dict]:
    """Yield ``{"image": uint8 [H, W, 3], "path": str, "index": int}`` per file in sorted order, from ``start`` on.

    ``index`` is the position in the sorted list. Files before ``start`` are not opened.
    """
    paths = image_paths(source)
    for index in range(start, len(paths)):
        yield {"image": decode_image(paths[index], str(paths[index])), "path": str(paths[index]), "index": index}


# --- FFHQ -------------------------------------------------------------------------------------------------------------


def ffhq_split(paths: Sequence[str | Path], split: str) -> list[Path]:
    """The paths of ``split`` ("train": file index < 60000, "test": >= 60000, "all") by the numeric file name."""
    if split not in ("train", "test", "all"):
        raise DataError(f"FFHQ split must be 'train', 'test' or 'all', got {split!r}")
    out = []
    for p in map(Path, paths):
        if not p.stem.isdigit():
            raise DataError(f"FFHQ file name is not a number: {p}")
        if split == "all" or (int(p.stem) < FFHQ_TRAIN) == (split == "train"):
            out.append(p)
    return out


def ffhq_paths(root: str | Path, split: str = "train", folder: str = "images1024x1024") -> list[Path]:
    """Sorted FFHQ image paths of ``split``. ``root`` holds ``folder`` (or is that folder)."""
    root = Path(root)
    base = root if root.name == folder and not (root / folder).is_dir() else root / folder
    if not base.is_dir():
        raise DataError(
            f"FFHQ not found: no {base}; download it from {FFHQ_URL} and unpack so that {base}/00000/00000.png exists"
        )
    paths = sorted(base.glob("[0-9]*/[0-9]*.png"))
    if not paths:
        raise DataError(f"no FFHQ images in {base} (expected {base}/<NN000>/<NNNNN>.png)")
    return ffhq_split(paths, split)


def read_ffhq(
    root: str | Path, split: str = "train", start: int = 0, folder: str = "images1024x1024"
) -> Iterator[dict]:
    """Yield ``{"image", "path", "index"}`` for the FFHQ ``split``; ``index`` is the numeric file index."""
    paths = ffhq_paths(root, split, folder)
    for p in paths[start:]:
        yield {"image": decode_image(p, str(p)), "path": str(p), "index": int(p.stem)}
