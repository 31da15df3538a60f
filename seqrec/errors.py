"""Errors a user can cause. The CLI prints them without a traceback."""

from __future__ import annotations


class SeqrecError(Exception):
    """Base class for errors caused by input or configuration, not by a bug."""


class DataError(SeqrecError, ValueError):
    """Bad interaction data: names the source, the column and the first offending rows."""


class ConfigError(SeqrecError, ValueError):
    """An unknown option or value; the message lists the valid ones."""


class NotFittedError(SeqrecError, RuntimeError):
    """A model method that needs ``fit`` (or ``load``) was called before it."""


def choose(kind: str, value: str, valid) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise a ConfigError listing them."""
    valid = list(valid)
    if value not in valid:
        raise ConfigError(f"unknown {kind} {value!r}; choose from {valid}")
    return value
