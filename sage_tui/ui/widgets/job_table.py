"""The fine-tuning job list: one row a job, with status, progress, loss and ETA."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from sage_tui.core.training.jobs import Job
from sage_tui.studio.formatting import job_cells
from sage_tui.ui.plain_text import plain

STATUS_STYLES = {
    "queued": "dim",
    "running": "bold cyan",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "interrupted": "yellow",
    "broken": "bold red",
}


def row(job: Job) -> tuple[Text, ...]:
    """The table cells of one job, all plain Text: a `str` cell would be parsed as markup, and
    the id and placement come from the disk."""
    cells = job_cells(job)
    status = plain(cells.status.value, style=STATUS_STYLES.get(cells.status.value, ""))
    return (plain(cells.id), status, *map(plain, (cells.where, cells.steps, cells.loss, cells.eta)))


class JobTable(DataTable):
    """Jobs, newest first. The screen calls `show(jobs)`; the cursor stays on its job."""

    COLUMNS = ("job", "status", "on", "step", "loss", "ETA")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.add_columns(*self.COLUMNS)

    @property
    def selected_id(self) -> str | None:
        """The id of the job under the cursor, or None when there are none."""
        if self.row_count == 0:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def show(self, jobs: Sequence[Job]) -> None:
        """Replace the rows, keeping the cursor on the same job when it is still listed."""
        selected = self.selected_id
        self.clear()
        for job in jobs:
            self.add_row(*row(job), key=job.id)
        ids = [job.id for job in jobs]
        if selected in ids:
            self.move_cursor(row=ids.index(selected), animate=False)
