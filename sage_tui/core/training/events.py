"""The job's event log: JSON lines the runner appends and the supervisor follows.

Kinds: started, step (loss, learning rate, tokens per second, progress, ETA), eval, checkpoint,
finished, failed (reason and a suggestion). A job's outcome is read from these events and the
runner's exit code, never from words in a log.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_tui.core.training.job_folder import JobFolder


@dataclass(frozen=True)
class Event:
    """One thing that happened to a job."""

    kind: str
    time: float
    data: dict[str, Any]


class EventWriter:
    """Appends events, one flushed line each, so a reader never sees half a line for long."""

    def __init__(self, job_dir: Path) -> None:
        self.path = JobFolder(job_dir).events_file
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  closed in close()

    def write(self, kind: str, **data: Any) -> None:
        """Append one event."""
        line = json.dumps({"kind": kind, "time": time.time(), **data}, default=str)
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def read_events(job_dir: Path, offset: int = 0) -> tuple[list[Event], int]:
    """Complete events from byte `offset` on, and the offset to read from next time.

    A line still being written (no newline yet) is left for the next call.
    """
    path = JobFolder(job_dir).events_file
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    events = []
    for raw in chunk[:end].splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # a torn line from a runner killed mid-write
        kind, when = record.pop("kind", "unknown"), record.pop("time", 0.0)
        events.append(Event(kind, when, record))
    return events, offset + end
