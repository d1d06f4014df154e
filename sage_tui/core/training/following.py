"""What a supervisor has read of each job's folder: its events and whether the folder reads.

Events are followed from the offset the last read stopped at (`EventFollower.catch_up`), so
following a job costs the bytes it appended, not the size of its log. Whether a folder reads
(`JobFolder.problem`) is checked again only when the folder, its spec.json or its events.jsonl
changed (a few `stat` calls otherwise), and is never stored: a folder put right by hand shows
its job as before at the next read. A job that cannot be read is a Job with `broken` set, never
an exception, so one bad folder leaves every other job followed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sage_tui.core.training.job_folder import EVENTS_FILE, SPEC_FILE, JobFolder
from sage_tui.core.training.job_rows import UNTRUSTED, kept_progress
from sage_tui.core.training.jobs import EventFollower, Job, JobStatus, job_from_row

ACTIVE = frozenset({JobStatus.QUEUED.value, JobStatus.RUNNING.value})


class JobFollowers:
    """Per job id: the events read so far and the last verdict on its folder. Not
    thread-safe: the supervisor calls it under its lock."""

    def __init__(self) -> None:
        self._events: dict[str, EventFollower] = {}
        self._verdicts: dict[str, tuple[tuple[Any, ...], str | None]] = {}
        self._ended: dict[str, tuple[tuple[Any, ...], Job]] = {}
        """An ended job as last built, with its row's values and its folder's verdict: the
        Finetune screen's poll lists every job each second, and an ended one seldom changes."""

    def follower(self, task_id: str) -> EventFollower:
        """The job's follower (a fresh one the first time)."""
        return self._events.setdefault(task_id, EventFollower())

    def catch_up(self, task_id: str, job_dir: Path) -> EventFollower:
        """Read what the job's runner appended since the last read and fold it in."""
        follow = self.follower(task_id)
        follow.catch_up(JobFolder(job_dir).events_file)
        return follow

    def started(self, task_id: str) -> None:
        """A new run of the job began: its earlier terminal event no longer counts."""
        self.follower(task_id).terminal = None

    def forget(self, task_id: str) -> None:
        """The job is gone (deleted): drop what was read of it."""
        self._events.pop(task_id, None)
        self._verdicts.pop(task_id, None)
        self._ended.pop(task_id, None)

    def problem(self, task_id: str, job_dir: str | Path, *, spec: bool = True) -> str | None:
        """Why the job's folder cannot be read (see `JobFolder.problem`); checked again only
        when the folder (and, with `spec`, its spec.json or events.jsonl) changed since.

        An ended job costs one `stat` of its folder: a thousand of them list in milliseconds.
        """
        base = str(job_dir)
        files = (base, f"{base}/{SPEC_FILE}", f"{base}/{EVENTS_FILE}") if spec else (base,)
        key = (spec, *map(_signature, files))
        cached = self._verdicts.get(task_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        verdict = JobFolder(Path(job_dir)).problem(spec=spec)
        self._verdicts[task_id] = (key, verdict)
        return verdict

    def job(self, row: Any) -> Job:
        """The row's job, with its progress and, when its folder does not read, why.

        An ended job whose progress its row kept reads no event (its folder is only looked at);
        an active one reads what was appended since the last read.
        """
        if row[UNTRUSTED]:  # an id that names no folder: listed as broken, no disk read
            return job_from_row(row, EventFollower(), row[UNTRUSTED])
        task_id, job_dir = row["id"], row["output_dir"]
        active = row["status"] in ACTIVE
        problem = self.problem(task_id, job_dir, spec=active)
        if not active:
            key = (*row.values(), problem)
            cached = self._ended.get(task_id)
            if cached is not None and cached[0] == key:
                return cached[1]
        kept = kept_progress(row)
        if kept is not None:
            job = job_from_row(row, EventFollower(progress=kept), problem)
            self._ended[task_id] = (key, job)
            return job
        follow = self.catch_up(task_id, Path(job_dir))
        return job_from_row(row, follow, problem or follow.problem)


def _signature(path: str) -> tuple[Any, ...]:
    """What changes when a file or folder is replaced, written, truncated or chmod-ed."""
    try:
        status = os.stat(path)
    except OSError as err:
        return (type(err).__name__,)
    return (status.st_ino, status.st_mode, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
