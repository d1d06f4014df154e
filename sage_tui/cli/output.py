"""What the commands write: results on stdout, progress and errors on stderr.

Text that quotes data (a model's answer, a log, a job's error, a dataset key, a model path)
goes through `core.safe_text.visible` when the stream is a terminal, so it cannot write the
user's clipboard (OSC 52), clear the screen or plant a link (OSC 8). Piped or redirected, it is
written as it is: a script reading `sage-tui ask` gets the model's text, and `jobs logs` the
log's bytes, unchanged.
"""

from __future__ import annotations

import sys
from typing import TextIO

from sage_tui.core.safe_text import VisibleStream, for_stream, visible, visible_bytes


def show(text: str = "", *, file: TextIO | None = None, end: str = "\n") -> None:
    """`print(text)` for text that may quote data (stdout unless `file` is given)."""
    stream = sys.stdout if file is None else file
    stream.write((visible(text) if for_stream(stream) else text) + end)


def show_bytes(data: bytes, *, file: TextIO | None = None) -> None:
    """Write bytes read from a file (a log): on a terminal decoded and made visible, with
    undecodable bytes shown as `\\xNN`; otherwise the bytes themselves."""
    stream = sys.stdout if file is None else file
    if for_stream(stream):
        stream.write(visible_bytes(data))
        return
    stream.flush()
    stream.buffer.write(data)
    stream.buffer.flush()


class AnswerWriter:
    """Writes a reply as it streams: made visible piece by piece on a terminal, else as is."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._shown = VisibleStream() if for_stream(stream) else None

    def write(self, piece: str) -> None:
        """Write one piece of the reply and flush it."""
        self.stream.write(piece if self._shown is None else self._shown.feed(piece))
        self.stream.flush()

    def end(self) -> None:
        """Write what is held back (a final `\\r` on a terminal) and the closing newline."""
        self.stream.write(("" if self._shown is None else self._shown.end()) + "\n")
        self.stream.flush()
