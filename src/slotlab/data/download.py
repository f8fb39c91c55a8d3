"""Downloads of the published datasets (for users with internet); offline, a one-line error says what to fetch.

``mirror`` replaces the scheme and host of every URL (a local copy of the buckets, or ``file://`` folders in
tests): ``https://storage.googleapis.com/a/b`` with mirror ``file:///m`` becomes ``file:///m/a/b``.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from slotlab.errors import DataError
from slotlab.io import fetch


def _mirrored(url: str, mirror: str | None) -> str:
    return url if not mirror else f"{mirror.rstrip('/')}/{urlparse(url).path.lstrip('/')}"


def verify_download(path: Path) -> None:
    """Check a downloaded file by its own format: every TFRecord's framing and CRCs, a zip's directory and CRCs, a
    JSON file's syntax. A :class:`DataError` says what is wrong."""
    name = path.name.removesuffix(".part")
    if ".tfrecord" in name:
        from slotlab.data.formats.tfrecord import read_records

        for _ in read_records(path):
            pass
    elif name.endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{path}: not a valid zip archive ({e})") from None
        if bad is not None:
            raise DataError(f"{path}: {bad} fails its CRC check")
    elif name.endswith(".json"):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None


def _movi(base: str, name: str, root: Path, splits: tuple[str, ...], progress: bool) -> list[Path]:
    """TFDS layout: dataset_info.json lists each split's shard lengths; shards are NAME-SPLIT.tfrecord-i-of-n."""
    try:
        info_path = fetch(f"{base}/dataset_info.json", root / "dataset_info.json", progress, verify=verify_download)
    except DataError as e:  # say what else is needed, not only the index file
        raise DataError(
            f"{e}; then fetch the shards it lists ({name}-SPLIT.tfrecord-NNNNN-of-MMMMM for the splits "
            f"{', '.join(splits)}) from {base}/ into {root}"
        ) from None
    try:
        info = json.loads(info_path.read_text())
        shards = {s["name"]: len(s["shardLengths"]) for s in info["splits"]}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{info_path}: not a TFDS dataset_info.json ({e})") from None
    paths = []
    for split in splits:
        n = shards.get(split, 0)
        for i in range(n):
            file = f"{name}-{split}.tfrecord-{i:05d}-of-{n:05d}"
            paths.append(fetch(f"{base}/{file}", root / file, progress, verify=verify_download))
    return paths


def download(
    name: str, root: str | Path, mirror: str | None = None, splits: tuple[str, ...] | None = None, progress: bool = True
) -> list[Path]:
    """Fetch dataset ``name`` into ``root``; returns the files (or folders) to pass to ``slotlab data convert``."""
    from slotlab.data.registry import dataset_info

    info, root = dataset_info(name), Path(root)
    if not info.downloads:
        raise DataError(f"{name}: no direct download; {info.manual_download or 'bring the files yourself'}")
    url = _mirrored(info.downloads[0], mirror)
    if name.startswith("movi_"):
        return _movi(url, name, root, splits or info.splits, progress)
    dest = fetch(url, root / Path(urlparse(url).path).name, progress, verify=verify_download)
    if dest.suffix == ".zip":  # CLEVR v1.0: unpack next to the archive
        folder = root / dest.stem
        if not folder.is_dir():
            try:
                with zipfile.ZipFile(dest) as z:
                    z.extractall(root / (dest.stem + ".unpacking"))
            except zipfile.BadZipFile as e:
                raise DataError(f"{dest}: not a valid zip archive ({e}); delete it and download again") from None
            unpacked = root / (dest.stem + ".unpacking")
            inner = unpacked / dest.stem
            shutil.move(str(inner if inner.is_dir() else unpacked), folder)
            shutil.rmtree(unpacked, ignore_errors=True)
        return [folder]
    return [dest]
