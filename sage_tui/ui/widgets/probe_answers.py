"""The selected job's checkpoint probes under its loss chart: each prompt, the base's answer
(step 0) and the latest checkpoint's, so the user sees the answers change as it trains.

Prompts and answers are data from the user and the model: the panel builds Rich `Text` from
them (`plain`), never markup, so `what does [/INST] mean?` shows as typed. Each answer takes one
line (cut with an ellipsis); the panel scrolls when five prompts do not fit. Hidden for a job
without probes. The screen gives it what its `read_detail` worker read; it reads nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from sage_tui.core.training.probes import ProbeRound, probe_progress
from sage_tui.ui.plain_text import plain


def probes_caption(prompts: Sequence[str], rounds: Sequence[ProbeRound]) -> str:
    """The line over the answers: how many prompts and which round is shown."""
    count = f"{len(prompts)} prompt{'s' if len(prompts) != 1 else ''}"
    if not rounds:
        return f"probes ({count}): waiting for the base model's answers (step 0)"
    last = rounds[-1]
    if last.step == 0:
        return f"probes ({count}): the base model's answers; each checkpoint answers again"
    seconds = f", {last.seconds:.1f} s" if last.seconds is not None else ""
    return f"probes ({count}): step 0 and step {last.step} ({last.checkpoint}{seconds})"


def _one_line(text: str | None) -> str:
    if text is None:
        return "-"
    return " ".join(text.split()) or "(empty)"


def probes_text(rounds: Sequence[ProbeRound]) -> Text:
    """Each prompt, then its step-0 answer and its latest answer, one line each."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    progress = probe_progress(rounds)
    width = max((len(str(p.latest_step or 0)) for p in progress), default=1)
    for number, item in enumerate(progress):
        if number:
            text.append("\n")
        text.append_text(plain(_one_line(item.prompt), style="bold"))
        text.append(f"\n  step {0:>{width}}  ", style="dim")
        text.append_text(plain(_one_line(item.before)))
        if item.latest_step is not None:
            text.append(f"\n  step {item.latest_step:>{width}}  ", style="dim")
            text.append_text(plain(_one_line(item.latest)))
    last = rounds[-1] if rounds else None
    if last is not None and last.error:
        text.append("\n")
        text.append_text(plain(f"probe at step {last.step} failed: {last.error}", style="red"))
    return text


class ProbeAnswersPanel(VerticalScroll):
    """The probe rounds of one job; the screen calls `show`."""

    def compose(self) -> ComposeResult:
        yield Static("", classes="probe-caption", markup=False)
        yield Static("", classes="probe-answers", markup=False)

    def show(self, prompts: Sequence[str], rounds: Sequence[ProbeRound]) -> None:
        """Show these rounds of a job that asks `prompts`; hidden when it asks none."""
        self.display = bool(prompts or rounds)
        if not self.display:
            return
        self.query_one(".probe-caption", Static).update(probes_caption(prompts, rounds))
        self.query_one(".probe-answers", Static).update(probes_text(rounds))

    @property
    def shown(self) -> str:
        """The caption and the answers as plain text (for tests)."""
        caption = str(self.query_one(".probe-caption", Static).render())
        return f"{caption}\n{self.query_one('.probe-answers', Static).render()}"
