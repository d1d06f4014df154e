"""A small loss chart: the step losses of a job as a sparkline, with first / last / min."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

MAX_POINTS = 240
"""The sparkline squeezes any number of points into its width; older ones add nothing."""


def describe_losses(losses: Sequence[float]) -> str:
    """One line over the chart: how many steps, first, last and lowest loss."""
    if not losses:
        return "loss: no steps yet"
    return (
        f"loss over {len(losses)} steps: first {losses[0]:.4f}  last {losses[-1]:.4f}"
        f"  min {min(losses):.4f}"
    )


class LossChartPanel(Vertical):
    """Step losses as a sparkline. The screen sets `losses`; the panel reads nothing itself."""

    def compose(self) -> ComposeResult:
        yield Static(describe_losses([]), classes="loss-chart-caption")
        yield Sparkline([], classes="loss-chart-line")

    def show(self, losses: Sequence[float]) -> None:
        """Draw these losses (oldest first)."""
        points = list(losses)[-MAX_POINTS:]
        self.query_one(".loss-chart-caption", Static).update(describe_losses(losses))
        self.query_one(Sparkline).data = points

    @property
    def losses(self) -> list[float]:
        """The points drawn now."""
        return list(self.query_one(Sparkline).data or [])
