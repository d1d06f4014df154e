"""Column mappings: a dataset's own key names given the standard names sage-tui reads.

A mapping goes from the standard name to the file's name, `{"instruction": "question",
"output": "answer"}` (LLaMA-Factory's dataset registry has the same idea); on the command line
it is written `instruction=question,output=answer`. Each object row's keys are renamed before
its format is detected and it is converted, so every format understands a mapped file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sage_tui.core.data.formats import DatasetError

STANDARD_COLUMNS: tuple[str, ...] = (
    "messages",
    "conversations",
    "system",
    "tools",
    "instruction",
    "input",
    "output",
    "context",
    "response",
    "history",
    "prompt",
    "completion",
    "text",
)
"""The top-level keys the formats understand: the names a mapping may give a column."""

_LIST_COLUMNS = ("messages", "conversations", "history")
_EXAMPLE = "for instance instruction=question,output=answer"


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _known() -> str:
    return ", ".join(STANDARD_COLUMNS)


def check_columns(columns: Mapping[str, str], *, shown: str | None = None) -> dict[str, str]:
    """`columns` as a plain dict, checked: every standard name known, no side empty, no file
    column given two standard names. DatasetError saying which entry is wrong otherwise;
    `shown` is the mapping as the user wrote it, for the message."""
    where = f"column mapping {_quoted(shown)}" if shown is not None else "column mapping"
    checked: dict[str, str] = {}
    taken: dict[str, str] = {}
    for standard, column in columns.items():
        if not isinstance(standard, str) or not standard.strip():
            raise DatasetError(f"{where}: a standard name is empty ({_EXAMPLE})")
        if not isinstance(column, str) or not column.strip():
            raise DatasetError(f"{where}: {_quoted(standard)} maps to an empty column name")
        if standard not in STANDARD_COLUMNS:
            hint = ""
            if column in STANDARD_COLUMNS:
                hint = f"; the standard name comes first: {column}={standard}"
            raise DatasetError(
                f"{where}: {_quoted(standard)} is not a standard column name"
                f" (known: {_known()}){hint}"
            )
        if column in taken:
            raise DatasetError(
                f"{where}: column {_quoted(column)} is given two standard names"
                f" ({taken[column]} and {standard})"
            )
        taken[column] = standard
        checked[standard] = column
    return checked


def parse_columns(text: str) -> dict[str, str]:
    """The mapping written `instruction=question,output=answer` (standard name first), as
    `{"instruction": "question", "output": "answer"}`; blank text is no mapping.

    DatasetError naming the entry for bad syntax, an empty side, a standard name given twice
    or one not known (the message lists the known ones).
    """
    if not text.strip():
        return {}
    mapping: dict[str, str] = {}
    where = f"column mapping {_quoted(text)}"
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            raise DatasetError(f"{where}: an entry is empty (entries are separated by commas)")
        if entry.count("=") != 1:
            raise DatasetError(f"{where}: {_quoted(entry)} is not STANDARD=COLUMN ({_EXAMPLE})")
        standard, column = (side.strip() for side in entry.split("="))
        if not standard:
            raise DatasetError(f"{where}: {_quoted(entry)} has no standard name before '='")
        if not column:
            raise DatasetError(f"{where}: {_quoted(entry)} has no column name after '='")
        if standard in mapping:
            raise DatasetError(
                f"{where}: {_quoted(standard)} is mapped twice"
                f" (to {_quoted(mapping[standard])} and {_quoted(column)})"
            )
        mapping[standard] = column
    return check_columns(mapping, shown=text)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value  # left a string: validation then says "must be a list"
    return value


def rename_columns(row: Any, columns: Mapping[str, str], *, cells: bool = False) -> Any:
    """`row` with its mapped keys renamed to the standard names (non-objects as they are).

    A key already holding a standard name that a mapping fills from another column is
    dropped: the mapped column replaces it. A mapping that takes `chosen` (train on the
    chosen replies of preference pairs) drops `rejected` too, so the row reads as the
    supervised example the user asked for. `cells`: the row is a CSV record, whose list
    columns hold JSON; a column mapped to one (`messages`, `conversations`, `history`) is
    parsed as the file reader parses those under their own names.
    """
    if not columns or not isinstance(row, dict):
        return row
    standard_of = {column: standard for standard, column in columns.items()}
    replaced = {standard for standard, column in columns.items() if column != standard}
    drop_rejected = "chosen" in standard_of
    renamed: dict[str, Any] = {}
    for key, value in row.items():
        if key in standard_of:
            standard = standard_of[key]
            renamed[standard] = _cell(value) if cells and standard in _LIST_COLUMNS else value
        elif key in replaced or (drop_rejected and key == "rejected"):
            continue
        else:
            renamed.setdefault(key, value)
    return renamed


def unmatched_columns(rows: Iterable[object], columns: Mapping[str, str]) -> list[str]:
    """The entries (`standard=column`) whose file column no object among `rows` holds."""
    seen: set[str] = set()
    for row in rows:
        if isinstance(row, dict):
            seen.update(key for key in row if isinstance(key, str))
    return [f"{std}={col}" for std, col in columns.items() if col not in seen]
