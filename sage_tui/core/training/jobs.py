"""A fine-tuning job as the supervisor reports it, and how its events and exit code read.

The `jobs` table holds what was asked and the status; the runner's `events.jsonl` holds the
progress. An :class:`EventFollower` folds the events read so far into a :class:`JobProgress`,
which every :class:`Job` carries, and :func:`outcome` decides how an ended process's job ended:
from its last terminal event and exit code, never from words in a log.
"""

from __future__ import annotations

import json
import signal
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sage_tui.core.text_enum import TextEnum
from sage_tui.core.training.events import Event, EventReader
from sage_tui.core.training.job_folder import EXIT_FINISHED, JobFolder
from sage_tui.core.training.placement import describe
from sage_tui.core.training.spec import JobSpec


class JobStatus(TextEnum):
    """Where a job stands. Stored in the database by value ("queued", ...), all but BROKEN."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    BROKEN = "broken"
    """Never stored: how a job whose folder cannot be read is shown (`Job.broken` says why).
    It is derived on every read, so a folder put right by hand shows its job as before."""

    @property
    def active(self) -> bool:
        """Queued or running: not ended yet."""
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)

    @property
    def stored(self) -> bool:
        """A status the `jobs` table holds (every one but BROKEN)."""
        return self is not JobStatus.BROKEN

    @property
    def ended(self) -> bool:
        return not self.active

    @property
    def resumable(self) -> bool:
        """Ended without finishing: can continue from a checkpoint, if it has one."""
        return self in (JobStatus.CANCELLED, JobStatus.INTERRUPTED, JobStatus.FAILED)


STATUSES = tuple(status.value for status in JobStatus if status.stored)
ENDED = tuple(status.value for status in JobStatus if status.stored and status.ended)
RESUMABLE = tuple(status.value for status in JobStatus if status.resumable)

TERMINAL_EVENTS = ("finished", "stopped", "failed")
NO_RESULT = "the training process ended without a result"


@dataclass(frozen=True)
class JobProgress:
    """A job's figures as read from its events (any of them may be unknown)."""

    step: int | None = None
    total_steps: int | None = None
    last_loss: float | None = None
    eta_seconds: float | None = None
    """Only while running."""
    tokens_per_second: float | None = None
    eval_loss: float | None = None

    def to_json(self) -> str:
        """As the `jobs` table keeps an ended job's progress (NaN and infinity kept)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> JobProgress:
        """Read back what `to_json` wrote (fields it does not know are left out)."""
        return cls(**{k: v for k, v in json.loads(text).items() if k in _PROGRESS_FIELDS})

    @property
    def fraction(self) -> float | None:
        """Share of steps done (0..1), when known."""
        if self.step is None or not self.total_steps:
            return None
        return min(1.0, max(0.0, self.step / self.total_steps))


_PROGRESS_FIELDS = frozenset(f.name for f in fields(JobProgress))
_SPEC_FIELDS = frozenset(f.name for f in fields(JobSpec))
"""Field names, computed once: a listing of a thousand jobs builds a thousand of each."""


@dataclass(frozen=True)
class Job:
    """A fine-tuning job as stored, with progress read from its events."""

    id: str
    base_model: str
    dataset: str
    status: JobStatus
    spec: JobSpec
    output_dir: Path
    pid: int | None
    error: str | None
    """Why it failed or was interrupted; for a queued job, why it waits (when known)."""
    created_at: float
    started_at: float | None
    finished_at: float | None
    gpus: tuple[int, ...] | None = None
    """Where it runs or last ran: GPU numbers, () for the CPU, None before its first start."""
    progress: JobProgress = field(default_factory=JobProgress)
    broken: str | None = None
    """Why its folder (or its row) cannot be read, in one line; None when it reads. The job
    keeps its status and the progress read before; it is shown as `broken`."""

    @property
    def shown_status(self) -> JobStatus:
        """The status to show: BROKEN while `broken` says why, else the status."""
        return JobStatus.BROKEN if self.broken else self.status

    @property
    def folder(self) -> JobFolder:
        """The job's folder and the files in it."""
        return JobFolder(self.output_dir)

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.status.active

    @property
    def placement(self) -> str:
        """Where it runs or last ran, in words ("GPU 1", "CPU"; "" before its first start)."""
        return describe(self.gpus)


@dataclass
class EventFollower:
    """What this process has read of one job's events: the figures, the last terminal event
    since the last `started`, and the reader that knows where the last read stopped."""

    progress: JobProgress = field(default_factory=JobProgress)
    terminal: Event | None = None
    reader: EventReader | None = None
    problem: str | None = None
    """Why the events could not be read the last time (what was read before is kept)."""

    def catch_up(self, events_file: Path) -> None:
        """Read the events appended since the last call (only those) and fold them in.

        A file truncated or replaced is folded again from the top; one that cannot be read
        sets `problem` and keeps the figures read so far.
        """
        if self.reader is None or self.reader.path != events_file:
            self.reader = EventReader(events_file)
        try:
            events = self.reader.read()
        except OSError as err:
            self.problem = f"events unreadable: {events_file}: {err.strerror or err}"
            return
        self.problem = None
        if self.reader.restarted:
            self.progress, self.terminal = JobProgress(), None
        for event in events:
            self.apply(event)

    def apply(self, event: Event) -> None:
        """Fold one more event in."""
        data, now = event.data, self.progress
        if event.kind == "started":
            self.terminal = None
            resumed = as_int(data.get("resumed_from"), None)
            self.progress = replace(
                now,
                total_steps=as_int(data.get("total_steps"), now.total_steps),
                step=resumed if resumed is not None else now.step,
            )
        elif event.kind == "step":
            self.progress = replace(
                now,
                step=as_int(data.get("step"), now.step),
                total_steps=as_int(data.get("total_steps"), now.total_steps),
                last_loss=as_float(data.get("loss"), now.last_loss),
                eta_seconds=as_float(data.get("eta_seconds"), None),
                tokens_per_second=as_float(data.get("tokens_per_second"), now.tokens_per_second),
            )
        elif event.kind == "eval":
            self.progress = replace(now, eval_loss=as_float(data.get("eval_loss"), now.eval_loss))
        elif event.kind in TERMINAL_EVENTS:
            self.terminal = event
            if event.kind == "finished":
                self.progress = replace(now, eta_seconds=0.0)


def outcome(terminal: Event | None, code: int | None) -> tuple[JobStatus, str | None]:
    """A finished process's status and error, from its last terminal event and exit code."""
    if terminal is not None and terminal.kind == "finished":
        return JobStatus.COMPLETED, None
    if terminal is not None and terminal.kind == "stopped":
        return JobStatus.CANCELLED, None
    if terminal is not None and terminal.kind == "failed":
        reason = str(terminal.data.get("reason") or "training failed").strip()
        suggestion = str(terminal.data.get("suggestion") or "").strip()
        return JobStatus.FAILED, f"{reason} {suggestion}".strip()
    if code == EXIT_FINISHED:
        return JobStatus.FAILED, "the training process exited without finishing (see train.log)"
    if code is None:
        return JobStatus.INTERRUPTED, f"{NO_RESULT} (killed?)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return JobStatus.INTERRUPTED, f"{NO_RESULT} (killed by {name})"
    return JobStatus.INTERRUPTED, f"{NO_RESULT} (exit code {code}, see train.log)"


def as_int(value: Any, default: int | None) -> int | None:
    """`value` as an int, or `default` when it is missing or not a finite number."""
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError, OverflowError):
        return default


def as_float(value: Any, default: float | None) -> float | None:
    """`value` as a float (NaN and infinity are kept: they are what training reported)."""
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


def job_from_row(row: Any, follower: EventFollower, broken: str | None = None) -> Job:
    """A `jobs` table row and the progress read from its events, as a Job; `broken` says why
    its folder cannot be read. A row that does not read back (its spec, its status) is a
    broken job too, never an exception."""
    known = _SPEC_FIELDS
    try:
        spec = JobSpec(**{k: v for k, v in json.loads(row["spec"]).items() if k in known})
    except (TypeError, ValueError, AttributeError) as err:
        spec = JobSpec(row["id"], row["base_model"], "", row["dataset"])
        broken = broken or f"its spec in the database does not read ({type(err).__name__})"
    try:
        status = JobStatus(row["status"])
    except ValueError:
        status = JobStatus.BROKEN
        broken = broken or f"unknown status {row['status']!r} in the database"
    progress = follower.progress
    if status is not JobStatus.RUNNING and progress.eta_seconds is not None:
        progress = replace(progress, eta_seconds=None)
    return Job(
        id=row["id"],
        base_model=row["base_model"],
        dataset=row["dataset"],
        status=status,
        spec=spec,
        output_dir=Path(row["output_dir"]),
        pid=row["pid"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        gpus=stored_gpus(row["gpus"]),
        progress=progress,
        broken=broken,
    )
