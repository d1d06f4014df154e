"""A small loss chart: the step losses of a job as a sparkline, with first / last / min.

Training can report a NaN or infinite loss (a diverged job): such a value is named in the
caption as it is ("last nan") and left out of the sparkline, whose scale it would break.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

MAX_POINTS = 240
"""The sparkline squeezes any number of points into its width; older ones add nothing."""


def finite(losses: Sequence[float]) -> list[float]:
    """The losses that are real numbers (no NaN, no infinity), in order."""
    return [loss for loss in losses if math.isfinite(loss)]


def describe_losses(losses: Sequence[float]) -> str:
    """One line over the chart: how many steps, first, last and lowest loss.

    First and last are shown as reported, NaN or not; the lowest is over the finite ones.
    """
    if not losses:
        return "loss: no steps yet"
    good = finite(losses)
    lowest = f"{min(good):.4f}" if good else "-"
    line = (
        f"loss over {len(losses)} steps: first {losses[0]:.4f}  last {losses[-1]:.4f}  min {lowest}"
    )
    if len(good) < len(losses):
        line += f"  ({len(losses) - len(good)} not finite)"
    return line


class LossChartPanel(Vertical):
    """Step losses as a sparkline. The screen sets `losses`; the panel reads nothing itself."""

    def compose(self) -> ComposeResult:
        yield Static(describe_losses([]), classes="loss-chart-caption", markup=False)
        yield Sparkline([], classes="loss-chart-line")

    def show(self, losses: Sequence[float]) -> None:
        """Draw these losses (oldest first)."""
        points = finite(list(losses)[-MAX_POINTS:])
        self.query_one(".loss-chart-caption", Static).update(describe_losses(losses))
        self.query_one(Sparkline).data = points

    @property
    def caption(self) -> str:
        """The line over the chart, as shown."""
        return str(self.query_one(".loss-chart-caption", Static).render())

    @property
    def losses(self) -> list[float]:
        """The points drawn now."""
        return list(self.query_one(Sparkline).data or [])
