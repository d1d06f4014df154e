"""What the Finetune screen shows of the selected job: its step losses, its probe rounds and
the end of its log.

The screen asks again at every step of a running job. The losses are kept per job and only
the events appended since the last call are read and parsed (an `EventReader` per job), so a
call costs the same at step 10 and at step 10,000; a log tail reads the last 16 KiB of
train.log whatever its size. Blocking (disk): front ends call it from a thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sage_tui.core.training.events import Event, EventReader
from sage_tui.core.training.jobs import Job
from sage_tui.core.training.probes import ProbeRound, probe_round

LOG_LINES = 15


@dataclass(frozen=True)
class JobDetail:
    """A job's step losses (NaN and infinity kept: the chart names them) and log tail."""

    losses: tuple[float, ...]
    log_tail: str
    problem: str | None = None
    """Why the events could not be read this time, or which lines were skipped (None: all
    read)."""
    probes: tuple[ProbeRound, ...] = ()
    """The checkpoint probes' rounds, oldest first (step 0: the base's answers)."""


def step_loss(event: Event) -> float | None:
    """The loss a step event reports; None for another event or a loss that is not a number."""
    loss = event.data.get("loss") if event.kind == "step" else None
    if isinstance(loss, bool) or not isinstance(loss, (int, float)):
        return None
    return float(loss)


@dataclass
class _Losses:
    """One job's losses as read so far, and the reader that knows where it stopped."""

    reader: EventReader
    losses: list[float] = field(default_factory=list)
    shown: tuple[float, ...] = ()
    probes: list[ProbeRound] = field(default_factory=list)


class JobDetails:
    """Per job: the losses read so far. Safe to call from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Losses] = {}

    def read(self, job: Job, log_lines: int = LOG_LINES) -> JobDetail:
        """The job's losses, reading only what its runner appended since the last call."""
        events_file = job.folder.events_file
        with self._lock:
            kept = self._jobs.get(job.id)
            if kept is None or kept.reader.path != events_file:
                kept = self._jobs[job.id] = _Losses(EventReader(events_file))
            problem = None
            try:
                events = kept.reader.read()
            except OSError as err:
                events, problem = [], f"events unreadable: {events_file}: {err.strerror or err}"
            if kept.reader.restarted:
                kept.losses.clear()
                kept.probes.clear()
            kept.probes += [r for event in events if (r := probe_round(event)) is not None]
            added = [loss for event in events if (loss := step_loss(event)) is not None]
            if added or kept.reader.restarted:
                kept.losses.extend(added)
                kept.shown = tuple(kept.losses)
            losses, problem = kept.shown, problem or kept.reader.damage()
            probes = tuple(kept.probes)
        return JobDetail(losses, job.folder.log_tail(log_lines), problem, probes)

    def forget(self, task_id: str) -> None:
        """The job is gone: drop what was read of it."""
        with self._lock:
            self._jobs.pop(task_id, None)
