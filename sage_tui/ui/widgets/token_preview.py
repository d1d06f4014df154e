"""The dataset Check's report: the studio's plain-text report, then the first row's tokens
with the ones that carry loss highlighted.

Everything in it comes from a file (the report quotes rows, the tokens are the row's text), so
it is built from plain strings into a `Text` with styles; nothing is parsed as markup. The
highlight is a component class, so the theme decides its colours and a theme change repaints it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from sage_tui.core.safe_text import visible
from sage_tui.ui.plain_text import plain

LEGEND = "highlighted: trained (carries loss)"
TOKENS_TITLE = "first row's tokens"
PIECE_CHARS = 800
"""Characters of the first row's tokens shown; the rest is counted."""


def report_text(
    text: str,
    pieces: Sequence[tuple[str, bool]],
    trained: Style | str = "reverse",
    limit: int = PIECE_CHARS,
) -> Text:
    """The report `text`, then (when there are pieces) the legend and the first row's tokens,
    those that carry loss in the `trained` style. Plain strings only: no markup is read."""
    out = plain(text)
    if not pieces:
        return out
    out.append("\n")
    out.append(f"{TOKENS_TITLE}:\n")
    word, rest = LEGEND.split(":", 1)
    out.append(word, style=trained)
    out.append(f":{rest}\n")
    shown = 0
    for index, (piece, carries_loss) in enumerate(pieces):
        if shown >= limit:
            out.append(f" ... ({len(pieces) - index} more tokens)")
            break
        piece = visible(piece)
        shown += len(piece)
        out.append(piece, style=trained if carries_loss else "")
    return out


class DatasetReport(Widget):
    """What the last Check found (or what is under way), with the token preview."""

    COMPONENT_CLASSES = {"dataset-report--trained"}
    DEFAULT_CSS = """
    DatasetReport {
        height: auto;
    }
    DatasetReport > .dataset-report--trained {
        background: $success-muted;
        color: $text;
        text-style: bold;
    }
    DatasetReport:ansi > .dataset-report--trained {
        text-style: reverse;
    }
    """

    def __init__(self, text: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.text = text
        """The report as plain text."""
        self.pieces: list[tuple[str, bool]] = []
        """The first row's tokens: (text, carries loss)."""

    def show(self, text: str, failed: bool, pieces: Sequence[tuple[str, bool]] = ()) -> None:
        """Show a report (`failed`: in the error colour) and the tokens of its first row."""
        self.text = text
        self.pieces = list(pieces)
        self.set_class(failed, "-error")
        self.refresh(layout=True)

    def render(self) -> Text:
        """The report and the tokens, highlighted in the theme's style."""
        return report_text(
            self.text, self.pieces, self.get_component_rich_style("dataset-report--trained")
        )
