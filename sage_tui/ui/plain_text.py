"""Text from users, models, datasets, logs and the disk, as the TUI shows it: data, never markup.

Two layers. Every widget that shows such text builds it with `plain` (a Rich `Text`, so no
markup is parsed, with terminal controls made visible by `core.safe_text.visible`). And the App
runs `ControlFilter` over every rendered line as a last line of defence: Textual 8.2.8 passes
ESC, C1 controls, bidi overrides and lone surrogates from a widget's text straight to the
terminal (Rich's `Text` strips only BEL, BS, VT, FF and CR), so a string that reached a widget
some other way (an `Input` holding a saved system prompt, a Textual-built label) still cannot
write the clipboard or clear the screen.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.text import Text
from textual.color import Color
from textual.filter import LineFilter

from sage_tui.core.safe_text import is_clean, visible, without_controls


def plain(text: str | None, style: str = "") -> Text:
    """`text` as a Rich Text: markup not parsed, controls shown (`␛`, `\\x9b`, ...)."""
    return Text(visible(text or ""), style=style, end="")


class ControlFilter(LineFilter):
    """Removes terminal controls from rendered segments (widths in cells are unchanged)."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        if is_clean("".join([segment.text for segment in segments])):
            return segments  # nearly every line: one search, no copy
        filtered = []
        for segment in segments:
            text = segment.text
            clean = text if segment.control else without_controls(text)
            filtered.append(segment if clean is text else Segment(clean, segment.style))
        return filtered
