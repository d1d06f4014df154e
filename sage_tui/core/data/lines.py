"""Opening dataset files and reading them a line at a time, with memory bounded by one line.

Only regular files are opened: a named pipe, a device or a socket is refused before anything
is read from it (opening a pipe for reading waits for a writer forever; `/dev/zero` never
ends). Lines come with their numbers, checked to be UTF-8 (the message names the line and
column of the first bad byte), and a line longer than :data:`MAX_ROW_CHARS` is read past in
chunks rather than held.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sage_tui.core.data.formats import DatasetError

MAX_ROW_CHARS = 64 * 1024 * 1024
"""The most characters one row may hold: a JSON line, a CSV line or a CSV cell (64 Mi, a long
book several times over: long documents are legitimate, a runaway line is not)."""

# Bytes that are not UTF-8 come through the decoder as these (errors="surrogateescape").
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_SKIP_CHUNK = 1024 * 1024


def too_long() -> str:
    """Why a row over the cap is refused (after "line N: " or "a cell is ")."""
    return f"longer than {MAX_ROW_CHARS:,} characters (the most one row may hold)"


def _what_it_is(mode: int) -> str | None:
    """What a file that is not a regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def _refuse_irregular(source: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise DatasetError(f"{source} is a folder, not a dataset file")
    kind = _what_it_is(mode)
    if kind is not None:
        raise DatasetError(
            f"{source} is {kind}, not a dataset file (only regular files are read;"
            " save the data to a file first)"
        )


def open_regular(path: Path) -> IO[bytes]:
    """`path` opened for reading in binary; DatasetError when it is missing, unreadable or
    anything but a regular file (a symlink counts as what it points to)."""
    source = str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        _refuse_irregular(source, os.stat(path).st_mode)
        # O_NONBLOCK: should a pipe be swapped in after that look, opening it must not wait
        # for a writer; fstat then refuses it.
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise DatasetError(f"{source} does not exist") from None
    except OSError as err:
        raise DatasetError(f"cannot read {source}: {err.strerror or err}") from None
    try:
        _refuse_irregular(source, os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def refuse_utf16(source: str, binary: IO[bytes]) -> None:
    """DatasetError when the file starts with a UTF-16 byte-order mark (what "Unicode text"
    exports of spreadsheets write); nothing is consumed."""
    peek = getattr(binary, "peek", None)
    head = peek(2)[:2] if peek is not None else b""
    if head in (b"\xff\xfe", b"\xfe\xff"):
        raise DatasetError(
            f"{source} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"
        )


def text_of(binary: IO[bytes], newline: str) -> io.TextIOWrapper:
    """A text reader over `binary` for `numbered_lines` (`newline` as for open())."""
    # utf-8-sig: spreadsheet exports often start with a byte-order mark. Bad bytes come
    # through escaped, so the line holding one can be named.
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline=newline)


def _check_utf8(source: str, number: int, line: str) -> None:
    found = _ESCAPED_BYTE.search(line)
    if found is None:
        return
    column = len(line[: found.start()].encode("utf-8", "surrogateescape")) + 1
    byte = ord(found.group()) - 0xDC00
    raise DatasetError(
        f"{source}: line {number} is not valid UTF-8 (byte 0x{byte:02x} at column {column});"
        " save the file as UTF-8"
    )


def numbered_lines(source: str, stream: io.TextIOWrapper) -> Iterator[tuple[int, str | None]]:
    """(line number, the line with its ending) for each line of `stream`; the line is None
    when longer than MAX_ROW_CHARS. DatasetError for a line that is not UTF-8."""
    number = 0
    while True:
        line = stream.readline(MAX_ROW_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_ROW_CHARS and not line.endswith(("\n", "\r")):
            while (rest := stream.readline(_SKIP_CHUNK)) and not rest.endswith(("\n", "\r")):
                pass
            yield number, None
            continue
        _check_utf8(source, number, line)
        yield number, line
