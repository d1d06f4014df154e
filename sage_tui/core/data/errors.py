"""The errors a dataset raises, and the small helpers that word their messages.

Kept apart from `formats` so that the modules `formats` builds on (`chat`, `kinds`) can raise
them without importing it.
"""

from __future__ import annotations

import json

from sage_tui.errors import SageError


class DatasetError(SageError):
    """A dataset file that cannot be used as it is; the message names the file and line."""


class InvalidRow(DatasetError):
    """One row that cannot be converted; the message is the reason, without file or line."""


def json_type(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def show(value: object, limit: int = 30) -> str:
    """`value` as it reads in a message: a string quoted as JSON, cut to `limit` characters."""
    shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
