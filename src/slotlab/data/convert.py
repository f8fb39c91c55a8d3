"""One-time conversion of a downloaded dataset into a store at model resolution (resumable).

Readers of the published formats yield one example per source record (``None`` for a record a filter drops, as
CLEVR6 drops scenes with more than 6 objects). Examples are batched, cropped and resized like the papers
(bilinear for images, nearest for label maps) and appended to a :class:`~slotlab.data.store.StoreWriter`, which
commits every chunk with the number of source records consumed. Running the same conversion again after an
interruption continues from there; a finished one returns at once.

Stored fields: ``image`` uint8 [3, R, R]; ``labels`` uint8 [R, R] (0 = background) when the dataset has masks;
``source_index`` int64 (the record's position in the source); and every numeric per-example array the reader
gives (factors such as ``visibility`` [E] or set-prediction ``targets`` [10, 19]) unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from slotlab.data.store import Store, StoreWriter
from slotlab.data.transforms import masks_to_labels, prepare_labels, stack_images
from slotlab.io import FolderLock

_IMAGE_KEYS = {"image", "mask", "labels"}


def examples_to_items(
    examples: list[dict], crop: list[int] | None, resolution: int, antialias: bool = False
) -> dict[str, np.ndarray]:
    """A list of reader examples -> arrays of stored fields with a leading item axis."""
    first = examples[0]
    items = {"image": stack_images([e["image"] for e in examples], crop, resolution, antialias)}
    if "mask" in first or "labels" in first:
        labels = [
            masks_to_labels(e["mask"][None]) if "mask" in e else torch.as_tensor(e["labels"])[None] for e in examples
        ]
        items["labels"] = np.concatenate([prepare_labels(y, crop, resolution).numpy() for y in labels])
    for key, value in first.items():
        if key in _IMAGE_KEYS or key == "source_index" or not isinstance(value, np.ndarray | np.number | int | float):
            continue
        if isinstance(value, bool | np.bool_) or np.asarray(value).dtype.kind not in "biuf":
            continue
        try:
            items[key] = np.stack([np.asarray(e[key]) for e in examples])
        except (KeyError, ValueError):
            continue  # not present in every example, or ragged: not a per-item field
    return items


def convert_examples(
    examples: Iterable[dict | None],
    dst: str | Path,
    attrs: dict,
    crop: list[int] | None,
    resolution: int,
    start: int = 0,
    total: int | None = None,
    limit: int | None = None,
    chunk: int = 256,
    progress: bool = True,
    antialias: bool = False,
) -> Store:
    """Write ``examples`` (the source from record ``start`` on) into the store at ``dst``."""
    writer = StoreWriter(dst, attrs)  # opened twice when resuming: once to learn `start`, once here (cheap)
    consumed = writer.consumed
    if consumed != start:
        raise ValueError(f"the source starts at record {start} but the store has consumed {consumed}")
    pending: list[dict] = []
    indices: list[int] = []
    bar = tqdm(
        total=limit or total,
        initial=consumed,
        unit="rec",
        desc=f"convert {attrs.get('dataset', '')}",
        disable=not progress,
        dynamic_ncols=True,
    )
    with bar:
        for example in examples:
            if limit is not None and consumed >= limit:
                break
            if example is not None:
                pending.append(example)
                indices.append(consumed)
            consumed += 1
            bar.update(1)
            if len(pending) == chunk:
                items = examples_to_items(pending, crop, resolution, antialias)
                writer.append(items | {"source_index": np.array(indices, np.int64)}, consumed)
                pending, indices = [], []
        if pending:
            writer.append(
                examples_to_items(pending, crop, resolution, antialias) | {"source_index": np.array(indices, np.int64)},
                consumed,
            )
        elif consumed != writer.consumed:
            writer.skip(consumed)
    return writer.finish()


def convert_dataset(
    name: str,
    src: str | Path,
    dst: str | Path,
    split: str = "train",
    resolution: int | None = None,
    limit: int | None = None,
    chunk: int = 256,
    progress: bool = True,
) -> Store:
    """Convert a downloaded dataset (``src``: its file or folder) to a store at ``dst`` with the papers' crop.

    ``resolution`` defaults to the papers' model resolution for the dataset; ``limit`` stops after that many
    source records. Interrupted conversions resume where they stopped when run again with the same arguments.
    """
    from slotlab.data.registry import dataset_info
    from slotlab.errors import DataError

    info = dataset_info(name)
    if info.read is None:
        raise DataError(f"dataset {name!r} has no published-format reader to convert from")
    if split not in info.splits:
        raise DataError(f"dataset {name!r} has splits {', '.join(info.splits)}, not {split!r}")
    src = Path(src)
    if not src.exists():
        raise DataError(f"source not found: {src}")
    resolution = resolution or info.resolution
    attrs = {
        "dataset": name,
        "split": split,
        "source": str(src.resolve()),
        "resolution": resolution,
        "crop": info.crop,
        "limit": limit,
        "antialias": info.antialias,
    }
    with FolderLock(dst, f"data convert {name}"):
        writer = StoreWriter(dst, attrs)
        if writer.complete:
            return Store(dst)
        total = info.num_records if split == "train" else None
        return convert_examples(
            info.read(src, split, writer.consumed),
            dst,
            attrs,
            info.crop,
            resolution,
            start=writer.consumed,
            total=total,
            limit=limit,
            chunk=chunk,
            progress=progress,
            antialias=info.antialias,
        )


def write_procedural_store(
    name: str,
    dst: str | Path,
    n: int,
    seed: int = 0,
    resolution: int | None = None,
    chunk: int = 500,
    progress: bool = True,
) -> Store:
    """Generate ``n`` scenes of a dataset's procedural twin straight into a store (crop and resolution as the
    papers'), ``chunk`` scenes at a time from seeds ``seed + i`` so memory stays bounded; resumable like
    :func:`convert_dataset`. Train on it with ``data.path=DST``."""
    from slotlab.data.registry import dataset_info
    from slotlab.errors import DataError

    info = dataset_info(name)
    if info.generate is None:
        raise DataError(f"dataset {name!r} has no procedural twin")
    resolution = resolution or info.resolution
    attrs = {
        "dataset": name,
        "split": "procedural",
        "source": f"procedural seed {seed} chunk {chunk}",
        "resolution": resolution,
        "crop": info.crop,
        "num": n,
    }
    with FolderLock(dst, f"data generate {name} --store"):
        writer = StoreWriter(dst, attrs)
        if writer.complete:
            return Store(dst)

        def examples():
            for i in range(writer.consumed // chunk, -(-n // chunk)):
                d = info.generate(min(chunk, n - i * chunk), seed + i)
                keys = [k for k, v in d.items() if isinstance(v, np.ndarray) and len(v) == len(d["image"])]
                for j in range(len(d["image"])):
                    yield {k: d[k][j] for k in keys}

        return convert_examples(
            examples(),
            dst,
            attrs,
            info.crop,
            resolution,
            start=writer.consumed,
            total=n,
            limit=n,
            chunk=chunk,
            progress=progress,
        )
