"""The fine-tuning job list: one row a job, with status, progress, loss and ETA."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from sage_tui.core.training.jobs import Job
from sage_tui.core.training.placement import describe

STATUS_STYLES = {
    "queued": "dim",
    "running": "bold cyan",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "interrupted": "yellow",
}


def format_eta(seconds: float | None) -> str:
    """Seconds left as `42 s`, `3 min 05 s` or `2 h 10 min`; `-` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def job_place(job: Job) -> str:
    """Where a job runs or ran; for a queued job, the GPUs it waits for ("-": any)."""
    if job.status == "queued":
        return describe(tuple(job.spec.gpus)) if job.spec.gpus else "-"
    return job.placement or "-"


def job_cells(job: Job) -> tuple[str | Text, ...]:
    """The table cells of one job: id, status, where, steps done (and share), loss, ETA."""
    steps = "-"
    if job.step is not None:
        steps = f"{job.step}/{job.total_steps or '?'}"
        if job.progress is not None:
            steps += f" {job.progress:.0%}"
    loss = f"{job.last_loss:.4f}" if job.last_loss is not None else "-"
    status = Text(job.status, style=STATUS_STYLES.get(job.status, ""))
    return (job.id, status, job_place(job), steps, loss, format_eta(job.eta_seconds))


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
            self.add_row(*job_cells(job), key=job.id)
        ids = [job.id for job in jobs]
        if selected in ids:
            self.move_cursor(row=ids.index(selected), animate=False)
