"""Errors that the command line reports as one line and a non-zero exit."""

from __future__ import annotations


class SlotlabError(Exception):
    """Base class: a user-facing problem with a clear one-line message."""


class ConfigError(SlotlabError):
    """A preset or override is wrong."""


class DataError(SlotlabError):
    """Input data is missing, malformed or of the wrong shape or type."""


class TrainingError(SlotlabError):
    """Training cannot go on (for example the loss became NaN)."""
