"""Errors that the command line reports as one line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path


class SlotlabError(Exception):
    """Base class: a user-facing problem with a clear one-line message."""


class ConfigError(SlotlabError):
    """A preset or override is wrong."""


class DataError(SlotlabError):
    """Input data is missing, malformed or of the wrong shape or type."""


class TrainingError(SlotlabError):
    """Training cannot go on (for example the loss became NaN)."""


def read_json(path: str | Path, missing: str):
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
