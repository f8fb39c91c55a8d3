"""Bring-your-own data: an ``.npz`` file with ``image`` uint8 [N, H, W, 3] and optional ``mask``.

``mask`` is either one-hot [N, K, H, W] (entity 0 = background) or a label map [N, H, W] (0 = background).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from slotlab.data.transforms import masks_to_labels
from slotlab.errors import DataError


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and check a bring-your-own ``.npz``. Returns (images uint8 [N,H,W,3], labels uint8 [N,H,W] or None)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single .npy array, not an .npz archive with an 'image' array")
        with f:
            if "image" not in f.files:
                raise DataError(f"{path}: no 'image' array (found {', '.join(f.files) or 'none'})")
            images = f["image"]
            mask = f["mask"] if "mask" in f.files else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: 'image' must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    if images.shape[0] == 0:
        raise DataError(f"{path}: 'image' holds no images")
    labels = None
    if mask is not None:
        n, h, w = images.shape[:3]
        ok = (mask.ndim == 3 and mask.shape == (n, h, w)) or (
            mask.ndim == 4 and mask.shape[0] == n and mask.shape[2:] == (h, w)
        )
        if not ok:
            raise DataError(
                f"{path}: 'mask' must be one-hot [N, K, {h}, {w}] or a label map [N, {h}, {w}] with N = {n}, "
                f"got {list(mask.shape)}"
            )
        try:
            labels = masks_to_labels(mask).numpy()
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
    return images, labels


def save_npz(path: str | Path, images: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Write the bring-your-own format (compressed)."""
    arrays = {"image": images} if mask is None else {"image": images, "mask": mask}
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
