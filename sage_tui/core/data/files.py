"""Reading dataset files row by row, each row with the line where it starts.

`.jsonl` is JSON lines; `.json` is a JSON array, an object holding one list such as
`{"data": [...]}`, or JSON lines saved under that name; `.csv` has a header row, and its list
columns (`messages`, `conversations`, `history`) hold JSON. Line numbers are found without a
second parser, so an error can point at the row in the user's own file.

Only regular files are read (`lines`). Memory stays bounded whatever the size: `.jsonl` and
`.csv` are read a line at a time (a row may hold at most `lines.MAX_ROW_CHARS` characters),
and iterating a :class:`RowFile` reads the file again rather than keeping its rows. The
standard library parses a `.json` document only whole, so a `.json` file is read whole up to
:data:`MAX_JSON_BYTES` and a larger one is refused with the way to turn it into JSON lines.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sage_tui.core.data.formats import DatasetError, json_type, marked_format
from sage_tui.core.data.lines import MAX_ROW_CHARS, numbered_lines, open_regular, text_of, too_long

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".jsonl", ".json", ".csv")

MAX_JSON_BYTES = 256 * 1024 * 1024
"""The largest `.json` file read: it is parsed whole, which costs several times its size."""

# CSV cells are strings; these columns hold lists, written as JSON inside the cell.
_JSON_COLUMNS = ("messages", "conversations", "history")


@dataclass(frozen=True)
class Row:
    """One row of a dataset file as read, before it is converted."""

    line: int  # 1-based line where the row starts
    index: int  # 0-based position among the file's rows
    value: Any
    error: str | None = None  # set when the row could not even be parsed


def _fail(source: str, what: str) -> DatasetError:
    return DatasetError(f"{source}: {what}")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):,.0f} MiB"


# ---------------------------------------------------------------------------------------------
# JSON lines


def _loads(text: str) -> Any:
    """json.loads, with nesting too deep for the parser as a JSONDecodeError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def _jsonl_rows(lines: Iterable[tuple[int, str | None]]) -> Iterator[Row]:
    index = 0
    for number, raw in lines:
        if raw is None:
            yield Row(number, index, None, too_long())
            index += 1
            continue
        stripped = raw.strip()
        if not stripped:
            continue
        try:
            value = _loads(stripped)
        except json.JSONDecodeError as err:
            where = ""
            if err.msg != "nested too deeply":
                where = f" (column {err.colno + len(raw) - len(raw.lstrip())})"
            yield Row(number, index, None, f"not valid JSON: {err.msg}{where}")
        else:
            yield Row(number, index, value)
        index += 1


def _split_lines(text: str) -> Iterator[tuple[int, str | None]]:
    # Not splitlines(): JSON strings may hold a raw U+2028, which splitlines() breaks on.
    return enumerate(text.split("\n"), start=1)


# ---------------------------------------------------------------------------------------------
# JSON documents

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _array_starts(text: str, pos: int) -> list[int]:
    """Offsets where the elements of the (valid) JSON array at `pos` start."""
    starts: list[int] = []
    pos = _skip(text, pos + 1)
    if text[pos] == "]":
        return starts
    while True:
        starts.append(pos)
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] != ",":
            return starts
        pos = _skip(text, pos + 1)


def _member_start(text: str, key: str) -> int:
    """Offset of the value of `key` in the (valid) top-level JSON object; the last one wins."""
    found = -1
    pos = _skip(text, _skip(text, 0) + 1)
    while text[pos] != "}":
        name, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, _skip(text, pos) + 1)  # past the colon
        if name == key:
            found = pos
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return found


def _lines_of(text: str, offsets: list[int]) -> list[int]:
    # Offsets ascend, so counting newlines between neighbours is linear in the file size.
    lines: list[int] = []
    line, previous = 1, 0
    for offset in offsets:
        line += text.count("\n", previous, offset)
        lines.append(line)
        previous = offset
    return lines


def _decode(source: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        byte = data[err.start]
        raise _fail(
            source,
            f"line {line} is not valid UTF-8 (byte 0x{byte:02x} at column {column});"
            " save the file as UTF-8",
        ) from None


def _read_json(source: str, text: str) -> tuple[list[Row], bool]:
    """Rows of a .json file, and whether they came from an array (rather than JSON lines)."""
    if not text.strip():
        return [], True
    try:
        document = _loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and text.lstrip().startswith("{"):
            # JSON lines saved as .json: common enough to just read them.
            return list(_jsonl_rows(_split_lines(text))), False
        if err.msg == "nested too deeply":
            raise _fail(source, "not valid JSON: nested too deeply for the parser") from None
        raise _fail(
            source, f"not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None
    if isinstance(document, dict) and marked_format(document) is not None:
        # One example saved on its own (its `messages` list is not a list of rows).
        return [Row(_lines_of(text, [_skip(text, 0)])[0], 0, document)], True
    if isinstance(document, list):
        items, start = document, _skip(text, 0)
    elif isinstance(document, dict):
        lists = [key for key, value in document.items() if isinstance(value, list)]
        if len(lists) != 1:
            raise _fail(
                source,
                "expected a JSON array of rows or an object with one list field such as"
                f' {{"data": [...]}} (list fields found: {", ".join(lists) or "none"})',
            )
        items, start = document[lists[0]], _member_start(text, lists[0])
    else:
        raise _fail(source, f"expected a JSON array of rows, got {json_type(document)}")
    lines = _lines_of(text, _array_starts(text, start))
    return [
        Row(line, i, value) for i, (line, value) in enumerate(zip(lines, items, strict=True))
    ], True


def _json_document(source: str, binary: IO[bytes]) -> tuple[list[Row], bool]:
    size = os.fstat(binary.fileno()).st_size
    if size > MAX_JSON_BYTES:
        raise _fail(
            source,
            f"a .json file is read whole, up to {_mib(MAX_JSON_BYTES)}, and this one holds"
            f" {_mib(size)}; save it as JSON lines (.jsonl, one row a line, read row by row),"
            " for instance with: jq -c '.[]' FILE.json > FILE.jsonl",
        )
    return _read_json(source, _decode(source, binary.read()))


# ---------------------------------------------------------------------------------------------
# CSV


def _csv_lines(source: str, lines: Iterable[tuple[int, str | None]]) -> Iterator[str]:
    for number, line in lines:
        if line is None:
            # A CSV record may span lines, so there is no telling where the next one starts.
            raise _fail(source, f"line {number}: {too_long()}")
        yield line


def _csv_rows(source: str, stream: io.TextIOWrapper) -> Iterator[Row]:
    # The limit is process-wide; it is only ever raised, to the cap on one row.
    if csv.field_size_limit() < MAX_ROW_CHARS:
        csv.field_size_limit(MAX_ROW_CHARS)
    reader = csv.DictReader(_csv_lines(source, numbered_lines(source, stream)))
    index = 0
    try:
        if reader.fieldnames is not None and not any(n.strip() for n in reader.fieldnames):
            raise _fail(
                source,
                f"line {reader.line_num}: the header row names no columns (the first line of"
                " a .csv names them, for instance instruction,output)",
            )
        for record in reader:
            value: dict[str, Any] = {}
            newlines = 0
            for key, cell in record.items():
                if key is None or cell is None:  # extra cells / short rows
                    continue
                newlines += cell.count("\n")
                if key in _JSON_COLUMNS and cell.lstrip().startswith("["):
                    # Left a string when broken: validation then says "must be a list".
                    with contextlib.suppress(json.JSONDecodeError):
                        cell = _loads(cell)
                value[key] = cell
            # line_num is where the record ends; quoted cells may span lines.
            yield Row(reader.line_num - newlines, index, value)
            index += 1
    except csv.Error as err:
        if "field larger than field limit" in str(err):
            reason = f"a cell is {too_long()}"
        else:
            reason = f"not valid CSV ({err})"
        # The csv reader's own count: DictReader's stops at the last record it returned.
        raise _fail(source, f"line {reader.reader.line_num}: {reason}") from None


# ---------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class RowFile:
    """A dataset file checked to be readable; iterating it reads its rows (again each time).

    `in_array` is True when the rows come from a JSON array (they are then also shown by
    number). A `.json` file's rows are parsed when it is opened and kept; other files are
    streamed.
    """

    path: Path
    in_array: bool = False
    _json_rows: list[Row] | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[Row]:
        if self._json_rows is not None:
            yield from self._json_rows
            return
        source = str(self.path)
        is_csv = self.path.suffix.lower() == ".csv"
        with open_regular(self.path) as binary, text_of(binary, "" if is_csv else "\n") as text:
            if is_csv:
                yield from _csv_rows(source, text)
            else:
                yield from _jsonl_rows(numbered_lines(source, text))


def open_rows(path: Path) -> RowFile:
    """The dataset file at `path`, ready to be read row by row.

    Raises DatasetError naming the file when it cannot be read as a whole: unsupported type,
    missing, not a regular file, or (for `.json`, parsed here) not valid JSON or too large.
    Reading the rows raises DatasetError for a line that is not UTF-8 or not valid CSV; a
    JSON line that does not parse, or is longer than MAX_ROW_CHARS, is a row with `error`
    set, so the other rows can still be used.
    """
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        shown = f"'{path.suffix}'" if path.suffix else "no extension"
        raise _fail(
            source,
            f"unsupported file type {shown} (supported: {', '.join(SUPPORTED_EXTENSIONS)})",
        )
    with open_regular(path) as binary:
        if suffix == ".json":
            rows, in_array = _json_document(source, binary)
            return RowFile(path, in_array, rows)
    return RowFile(path)


def read_rows(path: Path) -> tuple[list[Row], bool]:
    """All rows of a (small) dataset file in a list, and whether they came from a JSON array."""
    rows = open_rows(path)
    return list(rows), rows.in_array
