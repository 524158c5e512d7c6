"""Errors the savers raise; each says what to fix."""

from __future__ import annotations


class StateError(Exception):
    """Base class of the state layer's errors."""


class InvalidConfig(StateError, ValueError):
    """A config, id or argument the saver cannot use."""


class ValueTooLarge(StateError, ValueError):
    """A value over the saver's ``max_value_bytes``: refused whole, never truncated."""


class CorruptCheckpoint(StateError):
    """A stored row that does not decode (corrupt, foreign, or encrypted with another key)."""
