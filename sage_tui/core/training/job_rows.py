"""The `jobs` table: what the supervisor reads and writes there, in one place.

The table holds what was asked (the spec), the status, the pid and placement of the running
process and why a job failed or waits. Progress lives in each job's events; when a job ends,
the progress its events add up to is kept here too, so listing ended jobs (a thousand of them)
reads no folder.

A row is read back as data, not trusted: a job's folder is always built from its id under this
home (`Paths.job_dir`, never the `output_dir` the row holds, so a home moved elsewhere keeps
working and a tampered path is never followed), and a row whose id is not a task id (`../x`,
`/etc`, `a/b`, `.`, '', a NUL) is marked `untrusted` with the reason: it is listed as a broken
job, nothing is started, stopped or removed on disk from it, and only its record can be
deleted.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sage_tui.core.store import Store
from sage_tui.core.training.jobs import ENDED, JobProgress
from sage_tui.core.training.spec import JobSpec
from sage_tui.errors import SageError
from sage_tui.paths import TASK_ID, Paths

UNTRUSTED = "untrusted"
"""The key of a row read back that says why its id cannot name a folder (None: it can)."""
INERT_DIR = Path(os.devnull) / "untrusted-job-id"
"""The folder shown for a row whose id names none: under a file, so nothing can be read,
created or removed there."""


class JobError(SageError):
    """A fine-tuning job that does not exist or cannot do what was asked."""


class JobRows:
    """Reads and writes of the `jobs` table."""

    def __init__(self, store: Store, paths: Paths | None = None) -> None:
        self.store = store
        self.paths = paths
        """Where the jobs' folders are (None: a row keeps the folder it holds; its id is
        checked all the same)."""

    def insert(self, spec: JobSpec, output_dir: str) -> None:
        """Record a new job as queued."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, base_model, dataset, status, spec, output_dir,"
                " created_at) VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (
                    spec.task_id,
                    spec.base_model,
                    spec.dataset,
                    spec.to_json(),
                    output_dir,
                    time.time(),
                ),
            )

    def find(self, task_id: str) -> Any:
        """The job's row, or None."""
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (task_id,))
        return rows[0] if rows else None

    def require(self, task_id: str) -> Any:
        """The job's row (maybe `untrusted`); JobError when there is no such job."""
        row = self.find(task_id)
        if row is None:
            raise JobError(f"no fine-tuning job named {task_id}")
        return row

    def require_trusted(self, task_id: str) -> Any:
        """The job's row, to act on its folder or process; JobError when there is no such
        job or its id, read back from the database, names no folder."""
        row = self.require(task_id)
        if row[UNTRUSTED]:
            raise JobError(f"job {task_id!r} cannot be used: {row[UNTRUSTED]}")
        return row

    def with_status(self, status: str, *, oldest_first: bool = False) -> list[Any]:
        """Rows of the jobs in `status`, newest first (or oldest first)."""
        order = "ASC" if oldest_first else "DESC"
        return self._read(
            f"SELECT * FROM jobs WHERE status = ? ORDER BY created_at {order}, rowid {order}",
            (status,),
        )

    def all(self) -> list[Any]:
        """Every job's row, newest first."""
        return self._read("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows as read back, each with its folder built from its id (see the module)."""
        prefix = self.paths.outputs_prefix if self.paths is not None else None
        return [trusted_row(row, prefix) for row in self.store.query(sql, params)]

    def settle(
        self, task_id: str, status: str, error: str | None, progress: JobProgress | None = None
    ) -> None:
        """Record how a job ended (or why it failed to start), with its final progress."""
        with self.store.transaction() as db:
            settle_in(db, task_id, status, error, progress)

    def set_wait_reason(self, reason: str | None) -> None:
        """Say why the queued jobs wait (None: clear it; a job's start clears its own)."""
        with self.store.transaction() as db:
            db.execute("UPDATE jobs SET error = ? WHERE status = 'queued'", (reason,))

    def delete(self, task_id: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (task_id,))


def trusted_row(row: Any, outputs_prefix: str | None) -> dict[str, Any]:
    """A `jobs` row as a dict whose `output_dir` is built from its id under the home's job
    folders (`Paths.outputs_prefix`; None: kept), and `untrusted` saying why when the id is no
    task id (its folder is INERT_DIR). The id is checked here, so a string join is enough: a
    listing of a thousand jobs builds no Path."""
    data = dict(row)
    problem = TASK_ID.problem(data.get("id"))
    if problem is not None:
        data["output_dir"] = str(INERT_DIR)
        data[UNTRUSTED] = f"its id, read back from the database, is not valid: {problem}"
    else:
        if outputs_prefix is not None:
            data["output_dir"] = outputs_prefix + data["id"]
        data[UNTRUSTED] = None
    return data


def settle_in(
    db: sqlite3.Connection,
    task_id: str,
    status: str,
    error: str | None,
    progress: JobProgress | None = None,
) -> None:
    """`JobRows.settle` inside a transaction the caller holds. Without a progress the job's
    listing reads its events again."""
    db.execute(
        "UPDATE jobs SET status = ?, error = ?, finished_at = ?, progress = ? WHERE id = ?",
        (status, error, time.time(), progress.to_json() if progress else None, task_id),
    )


def kept_progress(row: Any) -> JobProgress | None:
    """The progress kept when the row's job ended; None while it is active, or when none was
    kept (a job that never ran, one that ended before sage-tui kept it)."""
    if row["status"] not in ENDED or not row["progress"]:
        return None
    try:
        return JobProgress.from_json(row["progress"])
    except (TypeError, ValueError, AttributeError):
        return None  # damaged: its events are read instead
