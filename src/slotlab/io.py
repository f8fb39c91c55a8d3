"""Files: JSON reading with one-line errors, atomic writes, downloads.

The lowest layer with :mod:`slotlab.errors`: everything that touches the disk or the network goes through here,
so that a crash, a full disk or a dropped connection never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from slotlab.errors import DataError


def read_json(path: str | Path, missing: str) -> Any:
    """The JSON value in ``path``; a :class:`DataError` with ``missing`` when there is no such file, or naming the
    line and column when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(missing) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` only when the block ends without error
    (the old file, if any, stays whole until then). On error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_json(path: str | Path, value: Any) -> Path:
    """``value`` as indented JSON, written atomically."""
    return atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def fetch(url: str, dest: Path, progress: bool = True, size: int | None = None) -> Path:
    """Download ``url`` to ``dest`` (through ``dest.part``, renamed when complete); an existing ``dest`` is kept.

    A download shorter than the server's Content-Length (or than ``size``, when the source publishes it) is refused
    and removed, so a broken connection never leaves a truncated file under the final name."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"cannot download {url} ({reason}); fetch it yourself and put it at {dest}") from None
    got, expected = part.stat().st_size, size if size is not None else total
    if expected is not None and got != expected:
        part.unlink(missing_ok=True)
        raise DataError(
            f"the download of {url} is incomplete ({got} of {expected} bytes); run it again, or fetch it "
            f"yourself and put it at {dest}"
        )
    part.replace(dest)
    return dest

