"""The job's event log: JSON lines the runner appends and the supervisor follows.

Kinds: started, step (loss, learning rate, tokens per second, progress, ETA), eval, checkpoint,
probe (a round of checkpoint probes, see `probes`), finished, failed (reason and a
suggestion). A job's outcome is read from these events and the runner's exit code, never from
words in a log.

Readers follow the file with an :class:`EventReader`: each read takes only the bytes appended
since the last one (a poll costs the same at step 10 and at step 10,000), keeps a line still
being written for the next read, and starts again from the top when the file was truncated,
replaced or rewritten in place. A line that is not an event (binary garbage, a line torn by a
runner killed mid-write) is skipped and counted, never raised.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sage_tui.core.training.job_folder import JobFolder

MAX_LINE = 1 << 20
"""Longest event line kept waiting for its end (1 MiB): anything longer is garbage."""
SEAM = 64
"""Bytes before the offset read again each time and compared with what was read there: a file
rewritten in place (`cp` over it) is noticed even when it grew, unless those bytes came out
the same."""


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
        self._file = open(self.path, "a+b")  # noqa: SIM115  closed in close()
        # A runner killed mid-write left a torn last line: start on a line of our own, so the
        # first event of this run is not glued onto it (and lost with it).
        if self._file.seek(0, os.SEEK_END) > 0:
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":
                self._file.write(b"\n")

    def write(self, kind: str, **data: Any) -> None:
        """Append one event."""
        line = json.dumps({"kind": kind, "time": time.time(), **data}, default=str)
        self._file.write(line.encode("utf-8") + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def parse_event(raw: bytes) -> Event | None:
    """One line of events.jsonl as an Event; None when it is not one (garbage, torn, not an
    object, no kind)."""
    try:
        record = json.loads(raw)
    except ValueError:  # UnicodeDecodeError included: binary garbage
        return None
    if not isinstance(record, dict) or not isinstance(kind := record.pop("kind", None), str):
        return None
    when = record.pop("time", 0.0)
    if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
        when = 0.0
    return Event(kind, float(when), record)


class EventReader:
    """Follows one events.jsonl from where the last read stopped.

    `read()` returns the complete events appended since the last call; after the file was
    truncated, replaced (a new inode) or rewritten in place (the SEAM bytes before the offset
    changed) it reads from the top and sets `restarted`. A missing file reads as
    no events (the runner has not written yet, or the folder is gone: what was read stays);
    any other OSError (no permission, a folder in its place) is raised for the caller to report.
    """

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        """Bytes of the file consumed so far (complete lines and the pending part)."""
        self.pending = b""
        """The start of a line still being written, kept for the next read."""
        self.restarted = False
        """Whether the last read started again from the top (truncated, replaced, rewritten)."""
        self.bytes_read = 0
        """Bytes read from the disk over this reader's life (what a poll costs)."""
        self.lines = 0
        """Complete lines read (the number of the last one)."""
        self.skipped = 0
        """Lines that were not events, skipped."""
        self.first_skipped: int | None = None
        """The number of the first skipped line (1-based), for the user."""
        self._identity: tuple[int, int] | None = None
        self._seam = b""

    @property
    def complete(self) -> int:
        """The offset just after the last complete line."""
        return self.offset - len(self.pending)

    def read(self) -> list[Event]:
        """The complete events appended since the last read."""
        self.restarted = False
        try:
            handle = open(self.path, "rb")  # noqa: SIM115  closed below
        except FileNotFoundError:
            return []
        with handle:
            status = os.fstat(handle.fileno())
            identity = (status.st_dev, status.st_ino)
            replaced = self._identity is not None and identity != self._identity
            if replaced or status.st_size < self.offset or not self._seam_holds(handle):
                self._start_over()
            self._identity = identity
            handle.seek(self.offset)
            chunk = handle.read()
        self.bytes_read += len(chunk)
        self.offset += len(chunk)
        self._seam = (self._seam + chunk)[-SEAM:]
        data = self.pending + chunk
        end = data.rfind(b"\n") + 1
        self.pending = data[end:]
        if len(self.pending) > MAX_LINE:
            self._skip(self.lines + 1)
            self.pending = b""
        events = []
        for raw in data[:end].split(b"\n")[:-1]:
            self.lines += 1
            event = parse_event(raw) if raw.strip() else None
            if event is not None:
                events.append(event)
            elif raw.strip():
                self._skip(self.lines)
        return events

    def _seam_holds(self, handle: BinaryIO) -> bool:
        """Whether the bytes just before the offset are still those read there."""
        if not self._seam:
            return True
        handle.seek(self.offset - len(self._seam))
        seam = handle.read(len(self._seam))
        self.bytes_read += len(seam)
        return seam == self._seam

    def _skip(self, line: int) -> None:
        self.skipped += 1
        if self.first_skipped is None:
            self.first_skipped = line

    def _start_over(self) -> None:
        self.offset, self.pending, self.lines, self._seam = 0, b"", 0, b""
        self.skipped, self.first_skipped = 0, None
        self.restarted = True

    def damage(self) -> str | None:
        """The skipped lines in one line for the user; None when there were none."""
        if not self.skipped:
            return None
        lines = "line" if self.skipped == 1 else "lines"
        return (
            f"{self.path}: {self.skipped} {lines} that are not events skipped"
            f" (the first is line {self.first_skipped})"
        )


def read_events(job_dir: Path, offset: int = 0) -> tuple[list[Event], int]:
    """Complete events from byte `offset` on, and the offset to read from next time.

    A line still being written (no newline yet) is left for the next call; a file shorter than
    `offset` (truncated) is read from the top.
    """
    reader = EventReader(JobFolder(job_dir).events_file, offset)
    events = reader.read()
    return events, reader.complete
