"""CSV dataset files read a record at a time, each row with the line where it starts.

The header row names the columns; an unnamed one (the index `df.to_csv()` writes) is left
out; the list columns (`messages`, `conversations`, `history`) hold JSON. A quoted cell may
span lines, so a record's line is the first the reader took for it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from sage_tui.core.data.lines import MAX_ROW_CHARS, numbered_lines, too_long
from sage_tui.core.data.rows import Row, fail, loads

# CSV cells are strings; these columns hold lists, written as JSON inside the cell.
_JSON_COLUMNS = ("messages", "conversations", "history")

# CSV header cells that name no column: an index written by pandas (`df.to_csv()` leaves its
# header cell empty; reading that back and saving again names it `Unnamed: 0`).
_UNNAMED = re.compile(r"\s*(Unnamed: \d+)?\s*")


class _CsvLines:
    """The lines fed to the csv reader, remembering the number of the first one read since
    `mark()`: where the record being read starts (a quoted cell may span lines)."""

    def __init__(self, source: str, lines: Iterable[tuple[int, str | None]]) -> None:
        self._source = source
        self._lines = iter(lines)
        self.number = 0  # the last line read
        self.first = 0

    def mark(self) -> None:
        self.first = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        number, line = next(self._lines)
        self.number = number
        if not self.first:
            self.first = number
        if line is None:
            # A CSV record may span lines, so there is no telling where the next one starts.
            raise fail(self._source, f"line {number}: {too_long()}")
        return line


def _cell(key: str, cell: str) -> Any:
    if key in _JSON_COLUMNS and cell.lstrip().startswith("["):
        # Left a string when broken: validation then says "must be a list".
        with contextlib.suppress(json.JSONDecodeError):
            return loads(cell)
    return cell


def csv_rows(source: str, stream: io.TextIOWrapper) -> Iterator[Row]:
    # The limit is process-wide; it is only ever raised, to the cap on one row.
    if csv.field_size_limit() < MAX_ROW_CHARS:
        csv.field_size_limit(MAX_ROW_CHARS)
    lines = _CsvLines(source, numbered_lines(source, stream))
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if header is None:
            return
        named = [(i, name) for i, name in enumerate(header) if not _UNNAMED.fullmatch(name)]
        if not named:
            raise fail(
                source,
                f"line {lines.first}: the header row names no columns (the first line of"
                " a .csv names them, for instance instruction,output)",
            )
        index = 0
        while True:
            lines.mark()
            cells = next(reader, None)
            if cells is None:
                return
            if not cells:  # a blank line
                continue
            # Cells past the header's are dropped; a short row lacks the last keys.
            value = {name: _cell(name, cells[i]) for i, name in named if i < len(cells)}
            yield Row(lines.first, index, value)
            index += 1
    except csv.Error as err:
        if "field larger than field limit" in str(err):
            reason = f"a cell is {too_long()}"
        else:
            reason = f"not valid CSV ({err})"
        raise fail(source, f"line {lines.number}: {reason}") from None
