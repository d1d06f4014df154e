"""Starts, follows, cancels and re-attaches fine-tuning jobs that run in child processes.

Each job runs `python -m sage_tui.core.training.runner JOB_DIR` in its own session, stdin
closed, output to `train.log`, so it survives the TUI exiting or an SSH drop. The `jobs` table
is the truth for a job's status; the runner's events and exit code decide how it ended.

`poll()` (about once a second, from a worker thread) follows running jobs, settles those whose
process ended and starts queued ones where `placement.place` finds room (one job per GPU by
default, `jobs_per_device`). A new Supervisor re-attaches to jobs an earlier one left running
(`reattach()`), checking pid and command line against pid reuse. Whenever it leaves a job
queued it starts the queue keeper (`training.keeper`), so queued jobs start after the TUI or
the command that queued them has exited.

A job whose folder cannot be read (deleted by hand, unreadable, a torn spec.json) is listed
with `broken` saying why and never stops the others being followed (`following.py`).

What a job is lives in `jobs.py`, its folder in `job_folder.py`, its row in `job_rows.py`;
what was read of each folder in `following.py`; the runner children in `runners.py`;
processes, pids and signals in `processes.py`; where a job runs in `placement.py`.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sage_tui.core.gpu_scope import GpusUnreadable
from sage_tui.core.private_files import DIR_MODE, private_dirs
from sage_tui.core.store import Store
from sage_tui.core.training.events import Event, read_events
from sage_tui.core.training.following import JobFollowers
from sage_tui.core.training.job_folder import LOG_FILE, JobFolder
from sage_tui.core.training.job_rows import UNTRUSTED, JobError, JobRows, settle_in
from sage_tui.core.training.jobs import RESUMABLE, Job, JobStatus, outcome
from sage_tui.core.training.placement import Device, PlacementError, describe, place
from sage_tui.core.training.processes import (
    HostDevices,
    default_runner_command,
    signal_group,
    start_keeper,
)
from sage_tui.core.training.queue_start import next_start
from sage_tui.core.training.runners import RunnerCommand, Runners
from sage_tui.core.training.spec import JobSpec
from sage_tui.paths import Paths

__all__ = ["Job", "JobError", "JobStatus", "Supervisor"]

DeviceProbe = Callable[[], Sequence[Device]]
RunnerEnv = Callable[[tuple[int, ...]], Mapping[str, str]]
"""Extra environment for a runner placed on these GPUs (its CPU share on a CPU host)."""


class Supervisor:
    """Fine-tuning jobs: create, start, follow, cancel, resume, re-attach, delete.

    Safe to share between threads: `poll()` in a worker, `cancel()` (which blocks while the
    runner saves a checkpoint) in another.
    """

    def __init__(
        self,
        store: Store,
        paths: Paths,
        *,
        runner_command: RunnerCommand | None = None,
        jobs_per_device: int = 1,
        devices: DeviceProbe | None = None,
        hand_over: bool | None = None,
        runner_env: RunnerEnv | None = None,
    ) -> None:
        if jobs_per_device < 1:
            raise ValueError("jobs_per_device must be at least 1")
        self.store = store
        self._table = JobRows(store, paths)
        self.paths = paths
        self.runner_command: RunnerCommand = runner_command or default_runner_command
        self.jobs_per_device = jobs_per_device
        """Jobs each GPU runs at a time (on a host without GPUs: jobs at a time)."""
        self.devices: DeviceProbe = devices or HostDevices()
        self.hand_over = runner_command is None if hand_over is None else hand_over
        """Start a queue keeper when a job is left queued (only the real runner can be handed
        to another process)."""
        self.runner_env: RunnerEnv = runner_env or (lambda gpus: {})
        self._lock = threading.RLock()
        self._runners = Runners(self.runner_command)
        self._followers = JobFollowers()

    # -- creating and starting --------------------------------------------------------------

    def create(self, spec: JobSpec) -> Job:
        """Check the spec, make the job's folder with spec.json and record the job as queued.

        A job pinned to a GPU this host does not have is refused here, before anything exists;
        while the GPUs cannot be read at all, it is queued and waits (saying why).
        """
        spec.check()
        if spec.gpus:
            try:
                place(spec.gpus, list(self.devices()), [], self.jobs_per_device)
            except PlacementError as err:
                raise JobError(f"job {spec.task_id}: {err}") from None
            except GpusUnreadable:
                pass  # the queue holds it with the reason until the GPUs read again
        job_dir = self.paths.job_dir(spec.task_id)
        with self._lock:
            if self._table.find(spec.task_id) is not None:
                raise JobError(f"a job named {spec.task_id} already exists: pick another task id")
            private_dirs(job_dir.parent)
            try:
                job_dir.mkdir(mode=DIR_MODE)  # private whatever the umask
            except FileExistsError:
                raise JobError(
                    f"the folder {job_dir} already exists: pick another task id"
                    " or remove the folder"
                ) from None
            try:
                JobFolder(job_dir).write_spec(spec)
                self._table.insert(spec, str(job_dir))
            except sqlite3.IntegrityError:
                shutil.rmtree(job_dir, ignore_errors=True)
                raise JobError(
                    f"a job named {spec.task_id} already exists: pick another task id"
                ) from None
            except BaseException:
                shutil.rmtree(job_dir, ignore_errors=True)
                raise
            self._followers.forget(spec.task_id)  # nothing read of an earlier job of that name
            return self.get(spec.task_id)

    def start(self, task_id: str, *, resume: bool = False) -> Job:
        """Start a queued job, or resume an ended one from its last checkpoint.

        While its GPU (or every GPU) is busy the job stays queued; `poll()` starts it when one
        frees (from its checkpoint when it has one). JobError when it cannot start at all.
        """
        with self._lock:
            row = self._table.require_trusted(task_id)
            status = row["status"]
            if status == "running":
                raise JobError(f"job {task_id} is already running")
            if resume:
                if status not in RESUMABLE:
                    raise JobError(
                        f"job {task_id} is {status}: only a cancelled, interrupted or failed"
                        " job can be resumed"
                    )
                problem = JobFolder(Path(row["output_dir"])).problem()
                if problem:
                    raise JobError(f"job {task_id} cannot be resumed: {problem}")
                if self.last_checkpoint(task_id) is None:
                    raise JobError(
                        f"job {task_id} has no checkpoint to resume from: submit it again as a"
                        " new job"
                    )
                with self.store.transaction() as db:
                    db.execute(
                        "UPDATE jobs SET status = 'queued', error = NULL, finished_at = NULL,"
                        " pid = NULL WHERE id = ?",
                        (task_id,),
                    )
            elif status != "queued":
                hint = (
                    "resume it from its checkpoint or submit a new job"
                    if status in RESUMABLE and self.last_checkpoint(task_id)
                    else "submit a new job"
                )
                raise JobError(f"job {task_id} is {status}: {hint}")
            self._start_queued()
            job = self.get(task_id)
        if job.status == "failed":
            raise JobError(f"job {task_id}: {job.error}")
        if job.status == "queued" and self.hand_over:
            start_keeper(self.paths, self.jobs_per_device)
        return job

    def submit(self, spec: JobSpec) -> Job:
        """Create a job and start it (it stays queued while others use every slot)."""
        job = self.create(spec)
        return self.start(job.id)

    # -- reading ----------------------------------------------------------------------------

    def get(self, task_id: str) -> Job:
        """One job, with progress from its events; JobError if there is none by that id."""
        with self._lock:
            return self._job(self._table.require(task_id))

    def list(self) -> list[Job]:
        """Every job, newest first."""
        with self._lock:
            return [self._job(row) for row in self._table.all()]

    def queued(self) -> list[str]:
        """Ids of the queued jobs, oldest first."""
        return [row["id"] for row in self._table.with_status("queued", oldest_first=True)]

    def events(self, task_id: str, offset: int = 0) -> tuple[list[Event], int]:
        """Complete events of a job from byte `offset` on, and the offset to read next."""
        row = self._table.require_trusted(task_id)
        return read_events(Path(row["output_dir"]), offset)

    def last_checkpoint(self, task_id: str) -> Path | None:
        """The newest complete checkpoint of a job (see `JobFolder.last_checkpoint`)."""
        return JobFolder(self.paths.job_dir(task_id)).last_checkpoint()

    # -- bookkeeping ------------------------------------------------------------------------

    def poll(self) -> list[Job]:
        """Follow running jobs, settle those whose process ended, start queued ones.

        Returns the jobs whose status changed.
        """
        changed: list[Job] = []
        with self._lock:
            for row in self._table.with_status("running"):
                job = self._check(row)
                if job is not None:
                    changed.append(job)
            changed += [self.get(task_id) for task_id in self._start_queued()]
            self._runners.reap(row["id"] for row in self._table.with_status("running"))
        return changed

    def reattach(self) -> list[Job]:
        """At launch: settle or keep following jobs an earlier process left running."""
        return self.poll()

    # -- stopping and removing --------------------------------------------------------------

    def cancel(self, task_id: str, *, grace_seconds: float = 30, term_seconds: float = 10) -> Job:
        """Stop a job: a queued one at once; a running one cooperatively, then by force.

        A running job is asked to stop through its STOP file (it saves a checkpoint and exits);
        after `grace_seconds` its process group gets SIGTERM, after `term_seconds` more SIGKILL.
        Blocks until the process has ended; the status becomes cancelled when the runner
        reported that it stopped, else interrupted. An ended job is returned as it is.
        """
        with self._lock:
            row = self._table.require_trusted(task_id)
            if row["status"] == "queued":
                with self.store.transaction() as db:  # unless another process just started it
                    db.execute(
                        "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?"
                        " AND status = 'queued'",
                        (time.time(), task_id),
                    )
                return self.get(task_id)
            if row["status"] != "running":
                return self._job(row)
            JobFolder(Path(row["output_dir"])).request_stop()
        if not self._runners.wait_ended(row, grace_seconds):
            for sig, wait in ((signal.SIGTERM, term_seconds), (signal.SIGKILL, 10.0)):
                if self._runners.liveness(row)[0]:
                    signal_group(row["pid"], sig)
                if self._runners.wait_ended(row, wait):
                    break
        self.poll()
        return self.get(task_id)

    def delete(self, task_id: str) -> None:
        """Remove a job's folder and its record; a running job must be cancelled first.

        A broken job is deleted too: a folder that is gone is not missed, one we may not read
        is made ours to remove. JobError (after the record is gone) when some of the folder
        could not be removed, naming it.
        """
        with self._lock:
            row = self._table.require(task_id)
            untrusted = row[UNTRUSTED]
            if row["status"] == "running" and not untrusted:
                self._check(row)
                row = self._table.require(task_id)
            if row["status"] == "running" and not untrusted:
                raise JobError(f"job {task_id} is running: cancel it before deleting it")
            self._table.delete(task_id)
            self._followers.forget(task_id)
            self._runners.forget(task_id)
        if untrusted:  # no path is built from it: nothing on disk is touched
            raise JobError(f"the record of job {task_id!r} is deleted; no folder was: {untrusted}")
        try:
            JobFolder(self.paths.job_dir(task_id)).remove()
        except OSError as err:
            raise JobError(
                f"job {task_id} is deleted, but its folder could not be removed:"
                f" {err.filename or err}: {err.strerror or err}"
            ) from None

    # -- internals --------------------------------------------------------------------------

    def _start_queued(self) -> list[str]:
        """Start queued jobs, oldest first, wherever there is room (under self._lock).

        Returns the ids of the jobs started, or failed because they can never start here. A
        job that has to wait does not hold back a later one that fits elsewhere.
        """
        queued_rows = self._table.with_status("queued")
        if not queued_rows:
            return []
        try:
            devices = list(self.devices())  # outside the transaction: NVML can be slow
        except GpusUnreadable as err:
            # GPUs that cannot be read are not "no GPUs": the jobs wait, and say why.
            self._table.set_wait_reason(str(err))
            return []
        if any(row["error"] for row in queued_rows):
            self._table.set_wait_reason(None)  # readable again: no stale reason
        touched: list[str] = []
        while True:
            # One start per transaction, so a failure can only roll back its own start.
            with self.store.transaction() as db:
                failed, start = next_start(db, devices, self.jobs_per_device)
                touched += failed
                if start is None:
                    return touched
                self._spawn(db, *start)
                touched.append(start[0])

    def _spawn(self, db: sqlite3.Connection, task_id: str, gpus: tuple[int, ...]) -> None:
        """Start the runner for a queued job on `gpus` and record it as running.

        Runs inside the caller's transaction, so no other process sees the job running
        without a pid or two processes start the same job. A job with a complete checkpoint
        (queued by a resume) continues from it. A start that fails is recorded on the job.
        """
        job_dir = self.paths.job_dir(task_id)
        problem = JobFolder(job_dir).problem()
        if problem:  # the runner could not read it either
            settle_in(db, task_id, "failed", f"cannot start: {problem}")
            return
        JobFolder(job_dir).clear_stop()
        resume = self.last_checkpoint(task_id) is not None
        command = self.runner_command(job_dir, resume)
        started = time.time()
        header = f"{'resuming' if resume else 'starting'} on {describe(gpus)}"
        try:
            proc = self._runners.spawn(
                task_id, command, job_dir, job_dir / LOG_FILE, header, gpus, self.runner_env(gpus)
            )
        except OSError as err:
            reason = f"cannot start the training process: {err.strerror or err}"
            settle_in(db, task_id, "failed", reason)
            return
        try:
            db.execute(
                "UPDATE jobs SET status = 'running', pid = ?, gpus = ?, started_at = ?,"
                " error = NULL, finished_at = NULL WHERE id = ?",
                (proc.pid, json.dumps(list(gpus)), started, task_id),
            )
        except BaseException:
            self._runners.kill(task_id)  # started, but not recorded: it must not run unsupervised
            raise
        self._followers.started(task_id)

    def _check(self, row: Any) -> Job | None:
        """Follow one running job; settle it if its process ended. The job if it changed.
        One whose id names no folder is only listed (broken), never followed."""
        if row[UNTRUSTED]:
            return None
        task_id, job_dir = row["id"], Path(row["output_dir"])
        alive, code = self._runners.liveness(row)
        follow = self._followers.catch_up(task_id, job_dir)
        if alive:
            return None
        self._runners.forget(task_id)
        terminal = follow.terminal
        if terminal is not None and row["started_at"] and terminal.time < row["started_at"]:
            terminal = None  # from an earlier run of this job, before a resume
        status, error = outcome(terminal, code)
        self._table.settle(task_id, status, error, follow.progress)
        JobFolder(job_dir).clear_stop()
        return self.get(task_id)

    def _job(self, row: Any) -> Job:
        return self._followers.job(row)
