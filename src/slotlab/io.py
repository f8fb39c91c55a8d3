"""Files: JSON reading with one-line errors, atomic writes, downloads.

The lowest layer with :mod:`slotlab.errors`: everything that touches the disk or the network goes through here,
so that a crash, a full disk or a dropped connection never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from slotlab.errors import ConfigError, DataError


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


def _umask() -> int:
    """The process's umask (reading it means setting it: put back at once; one writer per folder, no threads)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(path: str | Path, suffix: str | None = None, what: str = "the output") -> Path:
    """Refuse, before any work, an output file that could not be written at the end: a name without ``suffix``
    (``.png``; ``what`` names the output in that message), a folder, a path under a file, a folder on a read-only
    file system or one this user may not write into (root may write anywhere). :func:`atomic_path` checks the same
    when it writes."""
    path = Path(path)
    if suffix and path.suffix.lower() != suffix:
        raise ConfigError(f"{path}: {what} is written as {suffix[1:].upper()}; give a file name ending in {suffix}")
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if _written_through(path):
        return path
    parent = next(p for p in path.absolute().parents if p.exists())  # the folder it would be made in
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
    if os.statvfs(parent).f_flag & os.ST_RDONLY:
        raise ConfigError(f"cannot write {path}: {parent} is on a read-only file system")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {path}: this user may not write into {parent}")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` only when the block ends without error
    (the old file, if any, stays whole until then). On error the temporary file is removed. A link or a special
    file (``/dev/stdout``, a pipe) is written through, not replaced."""
    path = check_output(path)
    if _written_through(path):
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # the error names the output, not a temporary name beside it
        if e.errno in _FULL:
            raise _naming(e, path) from None
        raise ConfigError(f"cannot create {path}: {path.parent} takes no new files ({e.strerror})") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the mode open() would have given it
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and (e.filename == tmp or (e.filename is None and e.errno in _FULL)):
            raise _naming(e, path) from None  # the output, not the temporary file (a full disk names no file)
        raise


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no room for the file


def _written_through(path: Path) -> bool:
    """A link or a special file (``/dev/stdout``, a pipe): written into, not replaced."""
    return path.is_symlink() or (path.exists() and not path.is_file())


def _naming(error: OSError, path: Path) -> OSError:
    """The same error (its class, errno and message) about ``path``."""
    return type(error)(error.errno, error.strerror, str(path))


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


def fetch(
    url: str, dest: Path, progress: bool = True, size: int | None = None, verify: Callable[[Path], None] | None = None
) -> Path:
    """Download ``url`` to ``dest`` (through ``dest.part``, renamed when complete); an existing ``dest`` is kept.

    A download shorter than the server's Content-Length (or than ``size``, when the source publishes it), or that
    ``verify`` (a check of the file's own format: record checksums, a zip's directory) rejects with a
    :class:`DataError`, is refused and removed, so a broken transfer never lands under the final name."""
    if dest.is_file():
        return dest
    if not urllib.parse.urlsplit(url).scheme:  # urlopen's own error is a bare ValueError
        raise DataError(
            f"cannot download {url}: not a URL (no scheme such as https:// or file://; a mirror folder is file:///PATH)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # HTTPException: a bad port, a cut reply
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"cannot download {url} ({reason}); fetch it yourself and put it at {dest}") from None
    got, expected = part.stat().st_size, size if size is not None else total
    problem = f"{got} of {expected} bytes" if expected is not None and got != expected else None
    if problem is None and verify is not None:
        try:
            verify(part)
        except DataError as e:
            problem = str(e).replace(str(part), part.name)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DataError(
            f"the download of {url} is incomplete or corrupt ({problem}); run it again, or fetch it yourself and "
            f"put it at {dest}"
        )
    part.replace(dest)
    return dest


LOCK_FILE = ".slotlab.lock"
HOLDER_FILE = ".slotlab.lock.json"


def _holds_only_the_lock(folder: Path) -> bool:
    return {p.name for p in folder.iterdir()} <= {LOCK_FILE}


class FolderLock:
    """One writer per folder: an OS-level lock (``filelock``, released by the OS when the process ends, even by
    kill -9) on ``DIR/.slotlab.lock``, held for as long as a command writes into the folder. Who holds it (command,
    process id, start time) is written beside it, so a second writer is refused with one line that names the
    holder. Use as a context manager; ``folder`` is created if needed, and removed again if the block fails before
    anything but the lock was written into it."""

    def __init__(self, folder: str | Path, command: str):
        self.folder, self.command = Path(folder), command
        self._lock: Any = None

    def __enter__(self) -> FolderLock:
        from filelock import FileLock, Timeout

        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise DataError(
                f"{self.folder} is being written by another slotlab process ({self.holder()}); wait for "
                "it to end or choose another folder"
            ) from None
        self._lock = lock
        record = {"command": self.command, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            atomic_write_text(self.folder / HOLDER_FILE, json.dumps(record) + "\n")
        except BaseException:
            lock.release()
            raise
        return self

    def holder(self) -> str:
        """Who holds the lock, as far as its record says."""
        try:
            record = json.loads((self.folder / HOLDER_FILE).read_text())
            return f"`slotlab {record['command']}`, pid {record['pid']}, since {record['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                (self.folder / HOLDER_FILE).unlink()
            self._lock.release()
            self._lock = None
        if exc[0] is not None and self._created and self.folder.is_dir() and _holds_only_the_lock(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)  # a start that failed leaves nothing behind
