"""DeepMind's multi-object datasets (github.com/deepmind/multi_object_datasets): GZIP TFRecords of tf.train.Example.

Every file is one split. Byte features (``image``, ``mask``, CLEVR's ``color/material/shape/size`` codes) are
stored as one one-byte string per entry; float features as float lists. Masks are 0/255 with entity 0 the
background. Multi-dSprites stores its mask as [64, 64, E, 1]; it is returned, like every other dataset, as
[E, H, W, 1].

:func:`read_multi_object` yields one dict per record: ``image`` uint8 [H, W, C], ``mask`` uint8 [E, H, W, 1] and
the file's factors (float32 [E] or [E, C]; uint8 [E] for byte codes). :func:`write_multi_object` writes the exact
layout back (tests and the procedural twins use it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slotlab.data.formats.tfrecord import (
    TFRecordWriter,
    encode_example,
    parse_example,
    read_records,
)
from slotlab.errors import DataError

BUCKET_URL = "https://storage.googleapis.com/multi-object-datasets"


@dataclass(frozen=True)
class MultiObjectSpec:
    """One file of the multi-object datasets: its layout, size and where it is published."""

    name: str
    file: str  # path under BUCKET_URL
    image_shape: tuple[int, int, int]  # H, W, C
    num_entities: int  # background included
    float_factors: dict[str, tuple[int, ...]] = field(default_factory=dict)  # name -> per-entity trailing shape
    byte_factors: tuple[str, ...] = ()  # uint8 codes, one per entity
    mask_entities_last: bool = False  # stored [H, W, E, 1] (Multi-dSprites)
    num_records: int | None = None

    @property
    def url(self) -> str:
        return f"{BUCKET_URL}/{self.file}"

    @property
    def filename(self) -> str:
        return Path(self.file).name


def _dsprites(variant: str, channels: int, entities: int) -> MultiObjectSpec:
    factors: dict[str, tuple[int, ...]] = {k: () for k in ["x", "y", "shape", "visibility", "orientation", "scale"]}
    factors["color"] = (channels,)
    return MultiObjectSpec(
        f"multi_dsprites_{variant}",
        f"multi_dsprites/multi_dsprites_{variant}.tfrecords",
        (64, 64, channels),
        entities,
        factors,
        mask_entities_last=True,
        num_records=1_000_000,
    )


def _objects_room(split: str, entities: int, records: int | None) -> MultiObjectSpec:
    name = "objects_room_train" if split == "train" else f"objects_room_test_{split}"
    return MultiObjectSpec(name, f"objects_room/{name}.tfrecords", (64, 64, 3), entities, num_records=records)


SPECS: dict[str, MultiObjectSpec] = {
    s.name: s
    for s in [
        MultiObjectSpec(
            "clevr_with_masks",
            "clevr_with_masks/clevr_with_masks_train.tfrecords",
            (240, 320, 3),
            11,
            {"x": (), "y": (), "z": (), "rotation": (), "visibility": (), "pixel_coords": (3,)},
            ("color", "material", "shape", "size"),
            num_records=100_000,
        ),
        _dsprites("binarized", 1, 4),
        _dsprites("colored_on_grayscale", 3, 6),
        _dsprites("colored_on_colored", 3, 5),
        MultiObjectSpec(
            "tetrominoes",
            "tetrominoes/tetrominoes_train.tfrecords",
            (35, 35, 3),
            4,
            {"x": (), "y": (), "shape": (), "visibility": (), "color": (3,)},
            num_records=1_000_000,
        ),
        _objects_room("train", 7, 1_000_000),
        _objects_room("six_objects", 10, None),
        _objects_room("empty_room", 4, None),
        _objects_room("identical_color", 10, None),
    ]
}


def multi_object_spec(name: str) -> MultiObjectSpec:
    if name not in SPECS:
        raise DataError(f"unknown multi-object dataset file {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]


def _take(features: dict, key: str, size: int, dtype) -> np.ndarray:
    if key not in features:
        raise DataError(f"feature {key!r} is missing")
    a = features[key]
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.size != size:
        got = f"{len(a)} multi-byte strings" if isinstance(a, list) else f"{a.size} x {a.dtype}"
        raise DataError(f"feature {key!r} should hold {size} x {np.dtype(dtype)}, got {got}")
    return a


def decode_multi_object(spec: MultiObjectSpec, features: dict) -> dict[str, np.ndarray]:
    """Parsed features of one record -> arrays in the dataset's shapes (mask as [E, H, W, 1])."""
    h, w, c = spec.image_shape
    e = spec.num_entities
    out: dict[str, np.ndarray] = {"image": _take(features, "image", h * w * c, np.uint8).reshape(h, w, c)}
    mask = _take(features, "mask", e * h * w, np.uint8)
    out["mask"] = (
        mask.reshape(h, w, e, 1).transpose(2, 0, 1, 3) if spec.mask_entities_last else mask.reshape(e, h, w, 1)
    )
    for k, trailing in spec.float_factors.items():
        out[k] = _take(features, k, e * int(np.prod(trailing, dtype=int)), np.float32).reshape(e, *trailing)
    for k in spec.byte_factors:
        out[k] = _take(features, k, e, np.uint8)
    return out


def encode_multi_object(spec: MultiObjectSpec, example: dict[str, np.ndarray]) -> bytes:
    """One example (shapes as :func:`decode_multi_object` returns) -> a serialised record in the file's layout."""
    mask = np.asarray(example["mask"], np.uint8)
    if spec.mask_entities_last:
        mask = mask.transpose(1, 2, 0, 3)
    feats = {"image": np.asarray(example["image"], np.uint8), "mask": mask}
    feats |= {k: np.asarray(example[k], np.float32) for k in spec.float_factors}
    feats |= {k: np.asarray(example[k], np.uint8) for k in spec.byte_factors}
    return encode_example(feats)


def read_multi_object(spec: MultiObjectSpec | str, path: str | Path, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Yield the examples of a downloaded file, from record ``start`` on (earlier records are skipped undecoded)."""
    spec = multi_object_spec(spec) if isinstance(spec, str) else spec
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{spec.name} file not found: {path}; download {spec.url} and pass its path")
    for index, record in enumerate(read_records(path, check_crc=True)):
        if index < start:
            continue
        try:
            yield decode_multi_object(spec, parse_example(record))
        except DataError as e:
            raise DataError(f"{path}: record {index}: {e}") from None


def write_multi_object(
    spec: MultiObjectSpec | str, path: str | Path, examples: dict[str, np.ndarray], compression: str | None = "gzip"
) -> int:
    """Write a batch of examples (each array with a leading N axis) as a GZIP TFRecord in the file's layout."""
    spec = multi_object_spec(spec) if isinstance(spec, str) else spec
    n = len(examples["image"])
    keys = ["image", "mask", *spec.float_factors, *spec.byte_factors]
    missing = [k for k in keys if k not in examples]
    if missing:
        raise DataError(f"{spec.name} examples lack {', '.join(missing)}")
    with TFRecordWriter(path, compression) as w:
        for i in range(n):
            w.write(encode_multi_object(spec, {k: examples[k][i] for k in keys}))
    return n


def clevr6_keep(example: dict[str, np.ndarray]) -> bool:
    """The CLEVR6 subset of clevr_with_masks: at most 6 objects (``sum(visibility) - 1 <= 6``)."""
    return float(example["visibility"].sum()) - 1 <= 6
