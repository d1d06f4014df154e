"""A fine-tuning job as the supervisor reports it, and how its events and exit code read.

The `jobs` table holds what was asked and the status; the runner's `events.jsonl` holds the
progress. `Progress` folds the events read so far into the figures the job list shows, and
`outcome` decides how an ended process's job ended: from its last terminal event and exit
code, never from words in a log.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sage_tui.core.training.events import Event
from sage_tui.core.training.placement import describe
from sage_tui.core.training.spec import JobSpec

STATUSES = ("queued", "running", "completed", "failed", "cancelled", "interrupted")
ENDED = ("completed", "failed", "cancelled", "interrupted")
RESUMABLE = ("cancelled", "interrupted", "failed")

EXIT_FINISHED = 0
EXIT_STOPPED = 3
TERMINAL_EVENTS = ("finished", "stopped", "failed")
NO_RESULT = "the training process ended without a result"


@dataclass(frozen=True)
class Job:
    """A fine-tuning job as stored, with progress read from its events."""

    id: str
    base_model: str
    dataset: str
    status: str
    spec: JobSpec
    output_dir: Path
    pid: int | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    gpus: tuple[int, ...] | None = None
    """Where it runs or last ran: GPU numbers, () for the CPU, None before its first start."""
    step: int | None = None
    total_steps: int | None = None
    last_loss: float | None = None
    eta_seconds: float | None = None
    """Only while running."""
    tokens_per_second: float | None = None
    eval_loss: float | None = None

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.status in ("queued", "running")

    @property
    def placement(self) -> str:
        """Where it runs or last ran, in words ("GPU 1", "CPU"; "" before its first start)."""
        return describe(self.gpus)

    @property
    def progress(self) -> float | None:
        """Fraction of steps done (0..1), when known."""
        if self.step is None or not self.total_steps:
            return None
        return min(1.0, max(0.0, self.step / self.total_steps))


@dataclass
class Progress:
    """What this process has read of one job's events, folded into figures."""

    offset: int = 0
    step: int | None = None
    total_steps: int | None = None
    last_loss: float | None = None
    eta_seconds: float | None = None
    tokens_per_second: float | None = None
    eval_loss: float | None = None
    terminal: Event | None = None
    """The last finished/stopped/failed event since the last `started`."""

    def apply(self, event: Event) -> None:
        """Fold one more event in."""
        data = event.data
        if event.kind == "started":
            self.terminal = None
            self.total_steps = as_int(data.get("total_steps"), self.total_steps)
            resumed = as_int(data.get("resumed_from"), None)
            if resumed is not None:
                self.step = resumed
        elif event.kind == "step":
            self.step = as_int(data.get("step"), self.step)
            self.total_steps = as_int(data.get("total_steps"), self.total_steps)
            self.last_loss = as_float(data.get("loss"), self.last_loss)
            self.eta_seconds = as_float(data.get("eta_seconds"), None)
            self.tokens_per_second = as_float(data.get("tokens_per_second"), self.tokens_per_second)
        elif event.kind == "eval":
            self.eval_loss = as_float(data.get("eval_loss"), self.eval_loss)
        elif event.kind in TERMINAL_EVENTS:
            self.terminal = event
            if event.kind == "finished":
                self.eta_seconds = 0.0


def outcome(terminal: Event | None, code: int | None) -> tuple[str, str | None]:
    """A finished process's status and error, from its last terminal event and exit code."""
    if terminal is not None and terminal.kind == "finished":
        return "completed", None
    if terminal is not None and terminal.kind == "stopped":
        return "cancelled", None
    if terminal is not None and terminal.kind == "failed":
        reason = str(terminal.data.get("reason") or "training failed").strip()
        suggestion = str(terminal.data.get("suggestion") or "").strip()
        return "failed", f"{reason} {suggestion}".strip()
    if code == EXIT_FINISHED:
        return "failed", "the training process exited without finishing (see train.log)"
    if code is None:
        return "interrupted", f"{NO_RESULT} (killed?)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return "interrupted", f"{NO_RESULT} (killed by {name})"
    return "interrupted", f"{NO_RESULT} (exit code {code}, see train.log)"


def as_int(value: Any, default: int | None) -> int | None:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def as_float(value: Any, default: float | None) -> float | None:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def stored_gpus(value: str | None) -> tuple[int, ...] | None:
    """A stored placement (JSON list of GPU numbers) as a tuple; None when never placed."""
    if value is None:
        return None
    try:
        return tuple(int(index) for index in json.loads(value))
    except (TypeError, ValueError):
        return None


def job_from_row(row: Any, progress: Progress) -> Job:
    """A `jobs` table row and the progress read from its events, as a Job."""
    known = {f.name for f in fields(JobSpec)}
    spec = JobSpec(**{k: v for k, v in json.loads(row["spec"]).items() if k in known})
    return Job(
        id=row["id"],
        base_model=row["base_model"],
        dataset=row["dataset"],
        status=row["status"],
        spec=spec,
        output_dir=Path(row["output_dir"]),
        pid=row["pid"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        gpus=stored_gpus(row["gpus"]),
        step=progress.step,
        total_steps=progress.total_steps,
        last_loss=progress.last_loss,
        eta_seconds=progress.eta_seconds if row["status"] == "running" else None,
        tokens_per_second=progress.tokens_per_second,
        eval_loss=progress.eval_loss,
    )
