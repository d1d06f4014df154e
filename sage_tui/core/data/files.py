"""Reading dataset files into rows, each with the line where it starts.

`.jsonl` is JSON lines; `.json` is a JSON array, an object holding one list such as
`{"data": [...]}`, or JSON lines saved under that name; `.csv` has a header row, and its list
columns (`messages`, `conversations`, `history`) hold JSON. Line numbers are found without a
second parser, so an error can point at the row in the user's own file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_tui.core.data.formats import DatasetError, json_type, marked_format

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".jsonl", ".json", ".csv")

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


def _decode(source: str, data: bytes) -> str:
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
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


def _read_jsonl(text: str) -> list[Row]:
    rows: list[Row] = []
    # Not splitlines(): JSON strings may hold a raw U+2028, which splitlines() breaks on.
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as err:
            offset = len(raw) - len(raw.lstrip())
            reason = f"not valid JSON: {err.msg} (column {err.colno + offset})"
            rows.append(Row(number, len(rows), None, reason))
            continue
        rows.append(Row(number, len(rows), value))
    return rows


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


def _read_json(source: str, text: str) -> tuple[list[Row], bool]:
    """Rows of a .json file, and whether they came from an array (rather than JSON lines)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and text.lstrip().startswith("{"):
            # JSON lines saved as .json: common enough to just read them.
            return _read_jsonl(text), False
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


def _read_csv(source: str, text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[Row] = []
    try:
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
                        cell = json.loads(cell)
                value[key] = cell
            # line_num is where the record ends; quoted cells may span lines.
            rows.append(Row(reader.line_num - newlines, len(rows), value))
    except csv.Error as err:
        raise _fail(source, f"line {reader.line_num}: not valid CSV ({err})") from None
    return rows


def read_rows(path: Path) -> tuple[list[Row], bool]:
    """The rows of a dataset file, and whether they came from a JSON array (rather than lines).

    Raises DatasetError naming the file when it cannot be read as a whole: unsupported type,
    missing, not UTF-8, not valid JSON or CSV. A JSON line that does not parse is a row with
    `error` set, so the other rows can still be used.
    """
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        shown = f"'{path.suffix}'" if path.suffix else "no extension"
        raise _fail(
            source,
            f"unsupported file type {shown} (supported: {', '.join(SUPPORTED_EXTENSIONS)})",
        )
    if not path.exists():
        raise DatasetError(f"{source} does not exist")
    if path.is_dir():
        raise DatasetError(f"{source} is a folder, not a dataset file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read {source}: {err.strerror or err}") from None
    text = _decode(source, data)
    if suffix == ".jsonl":
        return _read_jsonl(text), False
    if suffix == ".json":
        return _read_json(source, text)
    return _read_csv(source, text), False
