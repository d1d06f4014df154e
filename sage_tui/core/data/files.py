"""Reading dataset files row by row, each row with the line where it starts.

`.jsonl` is JSON lines; `.json` is a JSON array, an object holding one list such as
`{"data": [...]}`, or JSON lines saved under that name; `.csv` has a header row, and its list
columns (`messages`, `conversations`, `history`) hold JSON; an unnamed column (the index
`df.to_csv()` writes) is left out. Any of them may start with a UTF-8 byte-order mark and end
its lines with CRLF or a bare CR. Line numbers are found without a second parser, so an error
can point at the row in the user's own file. CSV records are read by `csv_rows`.

Parquet files and folders saved by Hugging Face `datasets` have no lines: they are read by
`arrow_rows`, and their rows are numbered instead (`RowFile.unit` is "row").

Only regular files are read (`lines`). Memory stays bounded whatever the size: `.jsonl` and
`.csv` are read a line at a time (a row may hold at most `lines.MAX_ROW_CHARS` characters),
and iterating a :class:`RowFile` reads the file again rather than keeping its rows. The
standard library parses a `.json` document only whole, so a `.json` file is read whole up to
:data:`MAX_JSON_BYTES` and a larger one is refused with the way to turn it into JSON lines.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sage_tui.core.data.csv_rows import csv_rows
from sage_tui.core.data.formats import json_type, marked_format
from sage_tui.core.data.lines import (
    numbered_lines,
    open_regular,
    refuse_utf16,
    text_of,
    too_long,
)
from sage_tui.core.data.rows import Row, fail, loads

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet")
"""Dataset files read; a folder saved by `datasets` (or of Parquet shards) is read too."""

MAX_JSON_BYTES = 256 * 1024 * 1024
"""The largest `.json` file read: it is parsed whole, which costs several times its size."""


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):,.0f} MiB"


# ---------------------------------------------------------------------------------------------
# JSON lines


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
            value = loads(stripped)
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


_BARE_CR = re.compile(r"\r\n?")


def _decode(source: str, data: bytes) -> str:
    """The text of a .json file: its byte-order mark dropped and, when some lines end in a bare
    CR, every line ending made LF (JSON strings hold no raw CR, so nothing else changes) so
    that lines are counted as an editor shows them."""
    # The mark is dropped first so that offsets in the error count from the text.
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        byte = data[err.start]
        raise fail(
            source,
            f"line {line} is not valid UTF-8 (byte 0x{byte:02x} at column {column});"
            " save the file as UTF-8",
        ) from None
    crs = text.count("\r")
    if crs and crs != text.count("\r\n"):
        text = _BARE_CR.sub("\n", text)
    return text


def _read_json(source: str, text: str) -> tuple[list[Row], bool]:
    """Rows of a .json file, and whether they came from an array (rather than JSON lines)."""
    if not text.strip():
        return [], True
    try:
        document = loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and text.lstrip().startswith("{"):
            # JSON lines saved as .json: common enough to just read them.
            return list(_jsonl_rows(_split_lines(text))), False
        if err.msg == "nested too deeply":
            raise fail(source, "not valid JSON: nested too deeply for the parser") from None
        raise fail(
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
            raise fail(
                source,
                "expected a JSON array of rows or an object with one list field such as"
                f' {{"data": [...]}} (list fields found: {", ".join(lists) or "none"})',
            )
        items, start = document[lists[0]], _member_start(text, lists[0])
    else:
        raise fail(source, f"expected a JSON array of rows, got {json_type(document)}")
    lines = _lines_of(text, _array_starts(text, start))
    return [
        Row(line, i, value) for i, (line, value) in enumerate(zip(lines, items, strict=True))
    ], True


def _json_document(source: str, binary: IO[bytes]) -> tuple[list[Row], bool]:
    size = os.fstat(binary.fileno()).st_size
    if size > MAX_JSON_BYTES:
        raise fail(
            source,
            f"a .json file is read whole, up to {_mib(MAX_JSON_BYTES)}, and this one holds"
            f" {_mib(size)}; save it as JSON lines (.jsonl, one row a line, read row by row),"
            " for instance with: jq -c '.[]' FILE.json > FILE.jsonl",
        )
    return _read_json(source, _decode(source, binary.read()))


# ---------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class RowFile:
    """A dataset checked to be readable; iterating it reads its rows (again each time).

    `in_array` is True when the rows come from a JSON array (they are then also shown by
    number). `unit` is what `Row.line` counts: "line", or "row" for Parquet files and saved
    `datasets` folders, which have no lines. A `.json` file's rows are parsed when it is
    opened and kept; other files are streamed.
    """

    path: Path
    in_array: bool = False
    unit: str = "line"
    _json_rows: list[Row] | None = field(default=None, repr=False)
    _read: Callable[[], Iterator[Row]] | None = field(default=None, repr=False, compare=False)

    def __iter__(self) -> Iterator[Row]:
        if self._json_rows is not None:
            yield from self._json_rows
            return
        if self._read is not None:
            yield from self._read()
            return
        source = str(self.path)
        is_csv = self.path.suffix.lower() == ".csv"
        # newline="": lines end at LF, CRLF or a bare CR, and the csv reader sees quoted line
        # breaks as they are. JSON strings hold no raw CR or LF, so no row is split.
        with open_regular(self.path) as binary, text_of(binary, "") as text:
            if is_csv:
                yield from csv_rows(source, text)
            else:
                yield from _jsonl_rows(numbered_lines(source, text))


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False  # open_regular says why


def open_rows(path: Path) -> RowFile:
    """The dataset at `path`, ready to be read row by row: a file, or a folder saved by
    Hugging Face `datasets` (or holding Parquet shards), see `arrow_rows.open_folder`.

    Raises DatasetError naming the file when it cannot be read as a whole: unsupported type,
    missing, not a regular file, UTF-16, or (for `.json`, parsed here) not valid JSON or too
    large; for Parquet, not a Parquet file. Reading the rows raises DatasetError for a line
    that is not UTF-8 or not valid CSV; a JSON line that does not parse, or is longer than
    MAX_ROW_CHARS, is a row with `error` set, so the other rows can still be used.
    """
    source = str(path)
    if _is_folder(path):
        # Imported here: arrow_rows builds this module's rows and row files.
        from sage_tui.core.data.arrow_rows import open_folder

        return open_folder(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        shown = f"'{path.suffix}'" if path.suffix else "no extension"
        raise fail(
            source,
            f"unsupported file type {shown} (supported: {', '.join(SUPPORTED_EXTENSIONS)},"
            " or a folder saved by datasets)",
        )
    if suffix == ".parquet":
        from sage_tui.core.data.arrow_rows import open_parquet

        return open_parquet(path)
    with open_regular(path) as binary:
        refuse_utf16(source, binary)
        if suffix == ".json":
            rows, in_array = _json_document(source, binary)
            return RowFile(path, in_array, _json_rows=rows)
    return RowFile(path)


def read_rows(path: Path) -> tuple[list[Row], bool]:
    """All rows of a (small) dataset file in a list, and whether they came from a JSON array."""
    rows = open_rows(path)
    return list(rows), rows.in_array
