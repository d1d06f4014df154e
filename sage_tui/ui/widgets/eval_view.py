"""A job's evaluation beside its loss chart: each score's mean per model, and every row in a
modal (prompt, reference, each model's answer and scores).

The screen hands in the studio's `Evaluation` (or a line saying what is under way); nothing
here reads a file or calls the studio. Every text from the data or a model is shown as data.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from sage_tui.studio.evaluation import Evaluation
from sage_tui.ui.plain_text import plain

LOWER_IS_BETTER = {"loss", "perplexity"}
CELL = 48
"""Characters of a prompt, reference or answer shown in the rows table."""


def model_labels(evaluation: Evaluation, base: str | None) -> list[str]:
    """Column headings: "base" and the adapter's name for a job's own evaluation (the names
    are long), the models' names otherwise."""
    return ["base" if name == base else name for name in evaluation.models]


def metric_names(evaluation: Evaluation) -> list[str]:
    """The scores present, in the order the first model that has any lists them."""
    for model in evaluation.models:
        if evaluation.summary.get(model):
            return list(evaluation.summary[model])
    return []


def summary_table(evaluation: Evaluation, base: str | None = None) -> Table:
    """Each score's mean per model; the better of each row in bold."""
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    table.add_column("score")
    for label in model_labels(evaluation, base):
        table.add_column(plain(label), justify="right", overflow="ellipsis", max_width=24)
    for metric in metric_names(evaluation):
        values = [evaluation.summary.get(m, {}).get(metric) for m in evaluation.models]
        known = [v for v in values if v is not None]
        best = (min if metric in LOWER_IS_BETTER else max)(known) if known else None
        cells = [
            Text("-" if v is None else f"{v:.3f}", style="bold" if v == best else "")
            for v in values
        ]
        name = f"{metric} (lower is better)" if metric in LOWER_IS_BETTER else metric
        table.add_row(Text(name), *cells)
    return table


def caption(evaluation: Evaluation) -> str:
    """What was evaluated, in a line."""
    what = "held-out rows" if evaluation.held_out else f"rows of {Path(evaluation.source).name}"
    failed = sum(len(row.errors) for row in evaluation.rows)
    line = f"evaluation: {len(evaluation.rows)} {what}, {evaluation.seconds:.0f} s"
    return line + (f", {failed} answers failed" if failed else "") + " · v: every row"


class EvalPanel(Vertical):
    """The selected job's evaluation summary (or how to get one)."""

    def compose(self) -> ComposeResult:
        yield Static("", classes="eval-caption", markup=False)
        yield Static("", classes="eval-table")

    def on_mount(self) -> None:
        self.show(None)

    evaluation: Evaluation | None = None
    summary: Table | None = None
    """The summary table shown now (None while a line is shown instead)."""

    def show(self, evaluation: Evaluation | None, base: str | None = None) -> None:
        """Show an evaluation's summary; None: say how to run one."""
        self.evaluation = evaluation
        table = self.query_one(".eval-table", Static)
        if evaluation is None:
            self.say("not evaluated: e scores the adapter against its base on held-out rows")
            return
        self.query_one(".eval-caption", Static).update(plain(caption(evaluation)))
        self.summary = summary_table(evaluation, base)
        table.update(self.summary)
        table.display = True

    def say(self, line: str) -> None:
        """A line instead of the summary (an evaluation under way, or why there is none)."""
        self.query_one(".eval-caption", Static).update(plain(line))
        self.query_one(".eval-table", Static).display = False
        self.summary = None

    @property
    def caption(self) -> str:
        return str(self.query_one(".eval-caption", Static).render())


def _cell(text: str) -> Text:
    line = " ".join(text.split())
    return plain(line if len(line) <= CELL else line[: CELL - 1] + "\u2026")


class EvalRowsModal(ModalScreen[None]):
    """Every row of an evaluation: prompt, reference, each model's answer and token F1."""

    BINDINGS = [Binding("escape,q,v", "dismiss", "Close", id="eval.close")]

    def __init__(self, evaluation: Evaluation, base: str | None = None) -> None:
        super().__init__()
        self.evaluation = evaluation
        self.base = base

    def compose(self) -> ComposeResult:
        with Vertical(id="eval-rows-box"):
            yield Static(plain(caption(self.evaluation).split(" · ")[0]), id="eval-rows-caption")
            yield DataTable(id="eval-rows", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        labels = model_labels(self.evaluation, self.base)
        table.add_columns("line", "prompt", "reference")
        for label in labels:
            table.add_columns(plain(label), plain(f"F1 {label}"[:12]))
        for row in self.evaluation.rows:
            cells: list[Text] = [plain(str(row.line)), _cell(row.prompt), _cell(row.reference)]
            for model in self.evaluation.models:
                if model in row.errors:
                    cells += [plain(f"failed: {row.errors[model]}", style="red"), plain("-")]
                    continue
                f1 = row.scores.get(model, {}).get("token_f1")
                cells += [
                    _cell(row.answers.get(model, "")),
                    plain("-" if f1 is None else f"{f1:.2f}"),
                ]
            table.add_row(*cells)
        table.focus()
