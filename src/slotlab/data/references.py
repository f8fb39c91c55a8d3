"""Reference segmentations of a store's ground truth, scored like a model's (see :mod:`slotlab.metrics.reference`):
what mBO, mIoU and FG-ARI a given way of binding would reach on the same scenes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from slotlab.data.store import Store
from slotlab.errors import DataError
from slotlab.metrics import SegmentationMetric, pooled_labels, voronoi_labels


def score_references(
    store_path: str | Path, grids: Sequence[int] = (), last: int | None = None, chunk: int = 256, progress: bool = True
) -> dict:
    """``voronoi`` (every object whole in its own segment, the ground given to the nearest object) and
    ``pooled_G`` for each G of ``grids`` (the ground truth on a G x G grid, upsampled), scored on the store's label
    maps (its last ``last`` scenes if given), read ``chunk`` scenes at a time so memory stays bounded."""
    labels = Store(Path(store_path).expanduser()).arrays.get("labels")
    if labels is None:
        raise DataError(f"{store_path}: the store has no label maps to build references from")
    first = max(0, len(labels) - last) if last else 0
    builders: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"voronoi": voronoi_labels}
    builders.update({f"pooled_{g}": partial(pooled_labels, grid=g) for g in grids})
    metrics = {name: SegmentationMetric() for name in builders}
    for start in tqdm(range(first, len(labels), chunk), desc="references", disable=not progress):
        true = torch.from_numpy(np.asarray(labels[start : start + chunk]).astype(np.int64))  # the store stays on disk
        for name, build in builders.items():
            metrics[name].update(true, build(true))
    return {
        "store": str(store_path),
        "num_images": len(labels) - first,
        **{name: metric.compute() for name, metric in metrics.items()},
    }
