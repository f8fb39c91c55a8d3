"""Kubric MOVi (MOVi-C, MOVi-E, ...) as published: TFDS TFRecord shards of ``tf.train.Example``, one video each.

Files: ``DIR/<name>-<split>.tfrecord-NNNNN-of-MMMMM`` (uncompressed TFRecord; ``name`` e.g. ``movi_e``; split
``train``, ``validation`` or ``test``), published under ``gs://kubric-public/tfds/<name>/<128x128|256x256>/1.0.0/``.
Features of a record used here:

- ``video``: bytes list of T PNG-encoded RGB frames (T = 24; 128 or 256 px square);
- ``segmentations``: bytes list of T PNG-encoded one-channel uint8 frames, value = instance index + 1
  (0 = background). MOVi-E has up to 23 instances, more than a model has slots: values are kept as stored;
- ``metadata/*``: scalars and small arrays (``num_instances``, ``num_frames``, ``height``, ``width``,
  ``video_name``, ...). Numeric ones are kept (one-element lists as numpy scalars), ``video_name`` as str;
  ``instances/*``, depth, flow and the other per-frame maps are ignored.

:func:`read_movi_videos` yields whole videos, :func:`read_movi_frames` single frames as images (the converter's
contract: ``image`` uint8 [H, W, 3], ``labels`` uint8 [H, W]). :func:`write_movi_shard` writes the same layout.
Shards are always read uncompressed: a plain record whose length happens to start with the gzip magic bytes must
not be taken for a gzip stream.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from slotlab.data.formats.image_folder import decode_image
from slotlab.data.formats.tfrecord import (
    TFRecordWriter,
    encode_example,
    masked_crc32c,
    parse_example,
    read_records,
)
from slotlab.errors import DataError

MOVI_BUCKET = "gs://kubric-public/tfds"
MOVI_URL = "https://storage.googleapis.com/kubric-public/tfds"
_SPLITS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
_SHARD = re.compile(r"\.tfrecord-(\d{5})-of-(\d{5})$")


def movi_shards(root: str | Path, name: str = "movi_e", split: str = "train") -> list[Path]:
    """Sorted shard paths of ``name``/``split`` in ``root`` or up to three folder levels below it.

    ``root`` may be the shard folder itself, or e.g. the folder holding ``movi_e/128x128/1.0.0/``. Shards of
    several folders (say both resolutions) or of different ``-of-MMMMM`` counts are refused. A partial download
    (a subset of the shards) is accepted.
    """
    if split not in _SPLITS:
        raise DataError(f"MOVi split must be 'train', 'validation' or 'test', got {split!r}")
    pattern = f"{name}-{_SPLITS[split]}.tfrecord-*-of-*"
    root = Path(root)
    paths: list[Path] = []
    for depth in range(4):
        paths = sorted(p for p in root.glob("*/" * depth + pattern) if _SHARD.search(p.name) and p.is_file())
        if paths:
            break
    if not paths:
        where = f"{MOVI_BUCKET}/{name}/128x128/1.0.0/ (or 256x256; over https: {MOVI_URL}/{name}/128x128/1.0.0/)"
        raise DataError(
            f"no {name} {_SPLITS[split]} shards ({pattern}) under {root}; download them from {where}, "
            f"e.g. gsutil -m cp -r {MOVI_BUCKET}/{name}/128x128 {root}"
        )
    folders = sorted({str(p.parent) for p in paths})
    if len(folders) > 1:
        raise DataError(f"{name} {split} shards in several folders ({', '.join(folders)}): pass one as the root")
    totals = sorted({m.group(2) for p in paths if (m := _SHARD.search(p.name))})
    if len(totals) > 1:
        raise DataError(f"{folders[0]}: {name} {split} shards of different sets (-of-{', -of-'.join(totals)})")
    return paths


def _as_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]


_HEADER = struct.Struct("<QI")


def count_records(path: str | Path) -> int:
    """Number of records in an uncompressed TFRecord file, from the length headers alone (data is seeked over)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"TFRecord file not found: {path}")
    size, offset, n = path.stat().st_size, 0, 0
    with open(path, "rb") as f:
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                raise DataError(f"{path}: record {n} is truncated (header at byte {offset})")
            length, length_crc = _HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                raise DataError(f"{path}: record {n} has a bad length CRC (byte {offset})")
            if offset + 16 + length > size:
                raise DataError(f"{path}: record {n} is truncated (starts at byte {offset})")
            offset += 16 + length
            f.seek(offset)
            n += 1
    return n


def count_movi_videos(paths: str | Path | Sequence[str | Path]) -> int:
    """Number of videos in the shards (headers only; frames = videos x 24 for MOVi)."""
    return sum(count_records(p) for p in _as_paths(paths))


def _records(paths: str | Path | Sequence[str | Path], start: int) -> Iterator[tuple[int, Path, int, bytes]]:
    """(global index, shard, index in shard, record) from global index ``start`` on; whole shards before it are
    skipped by their headers, records before it in the first shard read are not parsed."""
    base = 0
    for path in _as_paths(paths):
        if start > base:
            n = count_records(path)
            if base + n <= start:
                base += n
                continue
        r = -1
        for r, record in enumerate(read_records(path, compression=None)):
            if base + r >= start:
                yield base + r, path, r, record
        base += r + 1


def _features(path: Path, r: int, record: bytes) -> dict:
    try:
        return parse_example(record)
    except DataError as e:
        raise DataError(f"{path}: record {r}: {e}") from None


def _pngs(features: dict, key: str, where: str) -> list[bytes] | None:
    if key not in features:
        return None
    value = features[key]
    if not isinstance(value, list):
        raise DataError(f"{where}: feature {key!r} is not a list of PNG frames ({value.size} x {value.dtype})")
    return value


def _decode_frames(pngs: list[bytes], which: Iterable[int], where: str, key: str) -> np.ndarray:
    frames = []
    for t in which:
        name = f"{where}: {key} frame {t}"
        if key == "video":
            frames.append(decode_image(pngs[t], name, "RGB"))
            continue
        a = decode_image(pngs[t], name, mode=None)
        a = a[..., 0] if a.ndim == 3 else a
        if a.dtype != np.uint8:
            if a.size and (a.min() < 0 or a.max() > 255):
                raise DataError(f"{name}: segmentation values beyond 0..255 ({a.dtype})")
            a = a.astype(np.uint8)
        frames.append(a)
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DataError(f"{where}: {key} frames differ in size ({', '.join(str(list(s)) for s in sorted(shapes))})")
    return np.stack(frames)


def _metadata(features: dict) -> dict:
    out = {}
    for k, v in features.items():
        if not k.startswith("metadata/"):
            continue
        if k == "metadata/video_name" and len(v):
            out[k] = (v[0] if isinstance(v, list) else bytes(v)).decode("utf-8", "replace")
        elif isinstance(v, np.ndarray) and v.dtype in (np.float32, np.int64):
            out[k] = v[0] if v.size == 1 else v
    return out


def _check_pair(video: np.ndarray, segs: np.ndarray | None, where: str) -> None:
    if segs is not None and segs.shape != video.shape[:3]:
        raise DataError(f"{where}: segmentations are {list(segs.shape)} but the video is {list(video.shape[:3])}")


def read_movi_videos(paths: str | Path | Sequence[str | Path], start: int = 0) -> Iterator[dict]:
    """Yield one dict per video, from video ``start`` on (counted over all shards in order)::

        {"video": uint8 [T, H, W, 3], "segmentations": uint8 [T, H, W], "index": int, "shard": str,
         "record": int, "metadata/...": ...}

    ``segmentations`` is absent when the records have none.
    """
    for index, path, r, record in _records(paths, start):
        features = _features(path, r, record)
        where = f"{path}: record {r}"
        pngs = _pngs(features, "video", where)
        if not pngs:
            raise DataError(f"{where}: no 'video' frames")
        video = _decode_frames(pngs, range(len(pngs)), where, "video")
        seg_pngs = _pngs(features, "segmentations", where)
        segs = None
        if seg_pngs is not None:
            if len(seg_pngs) != len(pngs):
                raise DataError(f"{where}: {len(seg_pngs)} segmentation frames for {len(pngs)} video frames")
            segs = _decode_frames(seg_pngs, range(len(seg_pngs)), where, "segmentations")
            _check_pair(video, segs, where)
        out = {"video": video} | ({} if segs is None else {"segmentations": segs})
        yield out | {"index": index, "shard": str(path), "record": r} | _metadata(features)


def read_movi_frames(
    paths: str | Path | Sequence[str | Path], start: int = 0, frames: Sequence[int] | None = None
) -> Iterator[dict]:
    """Yield single frames as images: ``{"image": uint8 [H, W, 3], "labels": uint8 [H, W], "video": int,
    "frame": int}`` (``labels`` absent without segmentations).

    ``frames`` selects frame indices of every video (e.g. ``[0]`` or ``range(0, 24, 4)``; default all);
    ``start`` counts yielded frames: earlier videos are parsed for their frame count but not decoded.
    """
    which_all = None if frames is None else [int(t) for t in frames]
    if which_all is not None and any(t < 0 for t in which_all):
        raise DataError(f"MOVi frame indices must be >= 0, got {which_all}")
    done = 0
    for index, path, r, record in _records(paths, 0):
        features = _features(path, r, record)
        where = f"{path}: record {r}"
        pngs = _pngs(features, "video", where)
        if not pngs:
            raise DataError(f"{where}: no 'video' frames")
        which = list(range(len(pngs))) if which_all is None else which_all
        if which and max(which) >= len(pngs):
            raise DataError(f"{where}: frame {max(which)} requested but the video has {len(pngs)} frames")
        if done + len(which) <= start:
            done += len(which)
            continue
        which, done = which[max(0, start - done) :], done + len(which)
        seg_pngs = _pngs(features, "segmentations", where)
        if seg_pngs is not None and len(seg_pngs) != len(pngs):
            raise DataError(f"{where}: {len(seg_pngs)} segmentation frames for {len(pngs)} video frames")
        for t in which:
            image = _decode_frames(pngs, [t], where, "video")[0]
            out = {"image": image, "video": index, "frame": t}
            if seg_pngs is not None:
                labels = _decode_frames(seg_pngs, [t], where, "segmentations")
                _check_pair(image[None], labels, where)
                out["labels"] = labels[0]
            yield out


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, "PNG")
    return buf.getvalue()


def _meta_value(v):
    if isinstance(v, (str, bytes)):
        return v
    a = np.asarray(v)
    if a.dtype.kind in "US":
        return [str(x) for x in a.reshape(-1)]
    if a.dtype.kind == "f":
        return a.astype(np.float32)
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    raise DataError(f"cannot store a MOVi feature of dtype {a.dtype}")


def encode_movi_video(video: dict) -> bytes:
    """One video dict (``video`` [T, H, W, 3], ``segmentations`` [T, H, W], metadata) -> a serialised record."""
    frames = np.asarray(video["video"])
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"MOVi 'video' must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    t, h, w = frames.shape[:3]
    feats: dict[str, object] = {"video": [_png(f) for f in frames]}
    meta = {"metadata/num_frames": t, "metadata/height": h, "metadata/width": w}
    if "segmentations" in video:
        segs = np.asarray(video["segmentations"])
        segs = segs[..., 0] if segs.ndim == 4 and segs.shape[-1] == 1 else segs
        if segs.dtype != np.uint8 or segs.shape != (t, h, w):
            raise DataError(f"MOVi 'segmentations' must be uint8 [{t}, {h}, {w}], got {segs.dtype} {list(segs.shape)}")
        feats["segmentations"] = [_png(s) for s in segs]
        meta["metadata/num_instances"] = int(segs.max(initial=0))
    for k, v in video.items():
        if k not in ("video", "segmentations"):
            meta[k if "/" in k else f"metadata/{k}"] = v
    feats |= {k: _meta_value(v) for k, v in meta.items()}
    return encode_example(feats)


def write_movi_shard(path: str | Path, videos: Iterable[dict]) -> int:
    """Write videos as one uncompressed TFDS-style shard; returns how many were written.

    Each dict holds ``video`` uint8 [T, H, W, 3], optionally ``segmentations`` uint8 [T, H, W] (value = instance
    index + 1) and metadata: keys without a ``/`` are stored as ``metadata/<key>``. ``metadata/num_frames``,
    ``height``, ``width`` and ``num_instances`` (the largest segmentation value) are filled in unless given.
    """
    n = 0
    with TFRecordWriter(path, None) as w:
        for video in videos:
            w.write(encode_movi_video(video))
            n += 1
    return n
