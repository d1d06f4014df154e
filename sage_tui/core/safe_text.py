"""Text from models, users, datasets, logs and disk, made safe to put on a terminal.

Such text is data. A reply holding `ESC ] 52 ; c ; ... ESC \\` would write the user's clipboard,
`ESC [ 2 J` would clear their screen, an OSC 8 sequence would plant a link, and a right-to-left
override would show a file name backwards. `visible` maps every control character except
newline and tab to something the user can see: C0 controls to their Unicode control pictures
(ESC becomes `␛`), DEL to `␡`, C1 controls and bidirectional overrides to a `\\xNN` / `\\uNNNN`
escape, and lone surrogates (bytes that were not UTF-8, read with `surrogateescape`) back to
the byte they stood for, as `\\xNN`. Nothing is removed, so the user sees that something was
there. The mapping is per character, so text that arrives in pieces can be mapped piece by
piece; `VisibleStream` also keeps a `\\r\\n` split between two pieces a line end.

`without_controls` is the last line of defence for what is already laid out in terminal cells
(the TUI's line filter): it drops the zero-width controls and keeps every cell where it was.

Piped output is not passed through this: a script reading `sage-tui ask` gets the model's text
byte for byte (see `for_stream`).
"""

from __future__ import annotations

import re
from typing import TextIO

_KEPT = {"\n", "\t"}
# Embedding, override and isolate controls: they reorder what follows them on screen.
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
# surrogateescape reads an undecodable byte 0xNN (0x80-0xFF) as U+DC80 + (0xNN - 0x80).
_ESCAPED_BYTES = range(0xDC80, 0xDD00)


def _table() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in range(0x20):
        if chr(code) not in _KEPT:
            table[code] = chr(0x2400 + code)  # U+2400 CONTROL PICTURES: ␀ ... ␛ ... ␟
    table[0x7F] = "\u2421"  # ␡
    for code in range(0x80, 0xA0):
        table[code] = f"\\x{code:02x}"
    for code in _BIDI:
        table[code] = f"\\u{code:04x}"
    for code in range(0xD800, 0xE000):
        if code in _ESCAPED_BYTES:
            table[code] = f"\\x{code - 0xDC00:02x}"
        else:
            table[code] = f"\\u{code:04x}"
    return table


_TABLE = _table()
_SURROGATES = {code: _TABLE[code] for code in range(0xD800, 0xE000)}


def storable(text: str) -> str:
    """`text` as UTF-8 can hold it (SQLite, a JSON file): lone surrogates, the undecodable
    bytes `surrogateescape` read, become the escapes `visible` shows (`\\xff`); everything
    else, controls included, is kept as it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.translate(_SURROGATES)
    return text


_CONTROL = re.compile("[" + "".join(re.escape(chr(code)) for code in sorted(_TABLE)) + "]")
# For text already laid out in cells: zero-width controls go, a surrogate (one cell) becomes
# U+FFFD (one cell), so nothing after it moves.
_CELL_TABLE: dict[int, str | None] = {
    code: ("\ufffd" if 0xD800 <= code < 0xE000 else None) for code in _TABLE
}


def visible(text: str) -> str:
    """`text` with every terminal control made visible (newlines and tabs kept).

    `\\r\\n` becomes `\\n` first (Windows line ends are not controls worth showing).
    """
    if _CONTROL.search(text) is None:
        return text
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    return text.translate(_TABLE)


def visible_bytes(data: bytes) -> str:
    """`data` decoded as UTF-8 for a person to read: undecodable bytes shown as `\\xNN`,
    controls made visible as `visible` does."""
    return visible(data.decode("utf-8", errors="surrogateescape"))


def is_clean(text: str) -> bool:
    """Whether `visible` would leave `text` as it is."""
    return _CONTROL.search(text) is None


def without_controls(text: str) -> str:
    """`text` with the controls `visible` would show removed instead, keeping its width in
    terminal cells (a lone surrogate, one cell wide, becomes U+FFFD)."""
    if _CONTROL.search(text) is None:
        return text
    return text.translate(_CELL_TABLE)


class VisibleStream:
    """`visible` for text arriving in pieces (a streamed reply): a `\\r` at the end of a piece
    waits for the next one, so a `\\r\\n` split across two pieces is still one line end."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, piece: str) -> str:
        """The visible form of everything up to the end of `piece` (a final `\\r` held)."""
        text = self._held + piece
        self._held = "\r" if text.endswith("\r") else ""
        return visible(text[:-1] if self._held else text)

    def end(self) -> str:
        """What is still held (a final `\\r`), made visible."""
        held, self._held = self._held, ""
        return visible(held)


def for_stream(stream: TextIO) -> bool:
    """Whether text written to `stream` must go through `visible`: only when a person sees it."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
