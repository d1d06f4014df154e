"""One row of a dataset file as read, and what every reader of rows shares."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sage_tui.core.data.formats import DatasetError


@dataclass(frozen=True)
class Row:
    """One row of a dataset file as read, before it is converted."""

    line: int  # 1-based line where the row starts (the row's number when `unit` is "row")
    index: int  # 0-based position among the file's rows
    value: Any
    error: str | None = None  # set when the row could not even be parsed


def fail(source: str, what: str) -> DatasetError:
    """The error for a file that cannot be read as a whole: `source: what`."""
    return DatasetError(f"{source}: {what}")


def loads(text: str) -> Any:
    """json.loads, with nesting too deep for the parser as a JSONDecodeError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
