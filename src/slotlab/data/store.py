"""The converted-dataset store: a folder of raw C-order arrays read as memory maps, written resumably.

Layout::

    DIR/meta.json        {"format": "slotlab-store", "count": N, "consumed": S, "complete": bool,
                          "fields": {name: {"dtype": ..., "shape": [per-item shape]}}, "attrs": {...}}
    DIR/<field>.bin      N items of that field, back to back

Why memory maps rather than HDF5: training gathers random batches, and a memory map serves them straight from
the page cache with one numpy fancy-index per field, in the main process or in forked DataLoader workers
(h5py handles must be reopened per worker and go through HDF5's chunk cache and the GIL). Appending raw bytes
and then committing the item count in ``meta.json`` also makes writing resumable for free: after a crash the
files are cut back to the committed count and conversion continues from the ``consumed`` source record.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from slotlab.errors import DataError
from slotlab.io import atomic_write_text, read_json

FORMAT = "slotlab-store"
META = "meta.json"


def is_store(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def _read_meta(root: Path) -> dict:
    path = root / META
    if root.is_file():
        raise DataError(f"{root}: a file, not a converted store (a folder from `slotlab data convert`)")
    meta = read_json(path, f"{root} is not a converted dataset (no {META}); make one with `slotlab data convert`")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} file")
    for key, ok, what in (
        ("count", _is_size, "a whole number >= 0"),
        ("consumed", _is_size, "a whole number >= 0"),
        ("complete", lambda v: isinstance(v, bool), "true or false"),
        ("fields", lambda v: isinstance(v, dict), "an object"),
        ("attrs", lambda v: isinstance(v, dict), "an object"),
    ):
        if not ok(meta.get(key)):
            raise DataError(f"{path}: {key} must be {what}, got {json.dumps(meta.get(key))}")
    for name, spec in meta["fields"].items():
        field = f"{path}: fields.{name}"
        if not isinstance(spec, dict):
            raise DataError(f'{field} must be {{"dtype": ..., "shape": [...]}}, got {json.dumps(spec)}')
        shape, dtype = spec.get("shape"), spec.get("dtype")
        if not isinstance(shape, list) or not all(_is_size(d) for d in shape):
            raise DataError(f"{field}.shape must be a list of whole numbers >= 0, got {json.dumps(shape)}")
        if not _is_dtype(dtype):
            raise DataError(f"{field}.dtype must be a numpy number type (uint8, float32, ...), got {json.dumps(dtype)}")
    return meta


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_dtype(value) -> bool:
    try:  # np.dtype(None) is float64: only names count
        return isinstance(value, str) and np.dtype(value).kind in ("b", "i", "u", "f", "c")
    except (TypeError, ValueError):
        return False


class StoreWriter:
    """Append batches of items to a store; ``commit`` makes them durable together with the source position.

    Opening a folder that holds an unfinished conversion with the same ``attrs`` resumes it: ``count`` and
    ``consumed`` say how far it got. A folder holding something else is refused.
    """

    def __init__(self, root: str | Path, attrs: dict):
        self.root = Path(root)
        self.attrs = json.loads(json.dumps(attrs))  # what JSON gives back, for the comparison on resume
        self.fields: dict[str, dict] = {}
        self.count = self.consumed = 0
        self.complete = False
        if is_store(self.root):
            meta = _read_meta(self.root)
            if meta["attrs"] != self.attrs:
                raise DataError(
                    f"{self.root} holds a different conversion ({meta['attrs']}); remove it or choose another folder"
                )
            self.fields, self.count, self.consumed = meta["fields"], meta["count"], meta["consumed"]
            self.complete = meta["complete"]
            for name, spec in self.fields.items():  # drop bytes written after the last commit
                with open(self.root / f"{name}.bin", "r+b") as f:
                    f.truncate(self.count * _item_bytes(spec))
        else:
            self.root.mkdir(parents=True, exist_ok=True)
        self._opened = set(self.fields)  # field files already cut to the committed size; others start empty

    def append(self, arrays: dict[str, np.ndarray], consumed: int) -> None:
        """Write items (arrays with a leading N axis) and commit; ``consumed`` = source records read so far."""
        n = {len(a) for a in arrays.values()}
        if len(n) != 1:
            raise DataError(f"fields have different numbers of items: { {k: len(a) for k, a in arrays.items()} }")
        if not self.fields:
            self.fields = {k: {"dtype": str(a.dtype), "shape": list(a.shape[1:])} for k, a in arrays.items()}
        if set(arrays) != set(self.fields):
            raise DataError(f"fields {sorted(arrays)} differ from the store's {sorted(self.fields)}")
        for name, a in arrays.items():
            spec = self.fields[name]
            if str(a.dtype) != spec["dtype"] or list(a.shape[1:]) != spec["shape"]:
                raise DataError(
                    f"field {name!r}: {a.dtype} {list(a.shape[1:])}, the store has {spec['dtype']} {spec['shape']}"
                )
            with open(self.root / f"{name}.bin", "ab" if name in self._opened else "wb") as f:
                self._opened.add(name)
                f.write(np.ascontiguousarray(a).tobytes())
                f.flush()
                os.fsync(f.fileno())
        self.count += n.pop()
        self.consumed = consumed
        self._write_meta()

    def skip(self, consumed: int) -> None:
        """Commit source records read that gave no item (filtered out)."""
        self.consumed = consumed
        self._write_meta()

    def finish(self) -> Store:
        """Mark the store complete. A store without items is refused (and stays unfinished): every later command
        would fail on it."""
        if self.count == 0:
            raise DataError(
                f"{self.root}: no items to store (the source gave none after {self.consumed} records); "
                "nothing was marked complete"
            )
        self.complete = True
        self._write_meta()
        return Store(self.root)

    def _write_meta(self) -> None:
        meta = {
            "format": FORMAT,
            "version": 1,
            "count": self.count,
            "consumed": self.consumed,
            "complete": self.complete,
            "fields": self.fields,
            "attrs": self.attrs,
        }
        atomic_write_text(self.root / META, json.dumps(meta, indent=1))


def _item_bytes(spec: dict) -> int:
    return math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize  # exact: np.prod would wrap around


class Store:
    """A converted dataset opened read-only: ``store["image"]`` is a memory map [N, *shape]."""

    def __init__(self, root: str | Path, allow_incomplete: bool = False):
        self.root = Path(root)
        meta = _read_meta(self.root)
        if not meta["complete"] and not allow_incomplete:
            raise DataError(
                f"{self.root}: unfinished ({meta['count']} items written); run the command that made it "
                "(`slotlab data convert`, `generate --store` or `cache-latents`) again to resume it"
            )
        self.meta, self.attrs, self.fields = meta, meta["attrs"], meta["fields"]
        self.arrays: dict[str, np.ndarray] = {}
        for name, spec in self.fields.items():
            path = self.root / f"{name}.bin"
            expected = meta["count"] * _item_bytes(spec)
            size = path.stat().st_size if path.is_file() else -1
            if size < expected:
                raise DataError(f"{path}: {max(size, 0)} bytes, expected {expected} for {meta['count']} items")
            shape = (meta["count"], *spec["shape"])
            self.arrays[name] = (
                np.memmap(path, spec["dtype"], "r", shape=shape) if meta["count"] else np.zeros(shape, spec["dtype"])
            )

    def __len__(self) -> int:
        return self.meta["count"]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def describe(self) -> dict:
        """What ``slotlab data info`` prints."""
        return {
            **self.attrs,
            "path": str(self.root),
            "items": len(self),
            "complete": self.meta["complete"],
            "source_records_read": self.meta["consumed"],
            "fields": {k: f"{v['dtype']} {v['shape']}" for k, v in self.fields.items()},
        }
