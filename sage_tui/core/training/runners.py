"""The runner processes a supervisor started, and whether a job's recorded process still runs.

A runner this process started is reaped through its Popen (its exit code is known); one an
earlier process started counts as the job's only while its pid runs this job's runner and
started with the job (`processes.pid_runs_job`), so a reused pid is never taken for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sage_tui.core.training.processes import pid_runs_job, spawn_runner

RunnerCommand = Callable[[Path, bool], list[str]]


class Runners:
    """The runner children of one supervisor, by job id. Safe to share between threads."""

    def __init__(self, runner_command: RunnerCommand) -> None:
        self.runner_command = runner_command
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(
        self,
        task_id: str,
        command: list[str],
        job_dir: Path,
        log_path: Path,
        header: str,
        gpus: tuple[int, ...],
        extra_env: Mapping[str, str],
    ) -> subprocess.Popen[bytes]:
        """Start a job's runner (see `processes.spawn_runner`); OSError when it cannot."""
        proc = spawn_runner(command, job_dir, log_path, header, gpus, extra_env=extra_env)
        with self._lock:
            self._procs[task_id] = proc
        return proc

    def kill(self, task_id: str) -> None:
        """Kill a runner just started whose start could not be recorded, and reap it."""
        with self._lock:
            proc = self._procs.pop(task_id, None)
        if proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def liveness(self, row: Any) -> tuple[bool, int | None]:
        """(alive, exit code if known) of a job's recorded process. Our own child is reaped
        through its Popen; another pid counts only if it runs this job's runner and started
        with the job."""
        task_id, pid, job_dir = row["id"], row["pid"], Path(row["output_dir"])
        with self._lock:
            proc = self._procs.get(task_id)
        if proc is not None and proc.pid == pid:
            code = proc.poll()
            return code is None, code
        commands = [self.runner_command(job_dir, resume) for resume in (False, True)]
        return pid_runs_job(pid, job_dir, row["started_at"], commands), None

    def wait_ended(self, row: Any, seconds: float) -> bool:
        """Wait up to `seconds` for the job's process to end; True if it has."""
        deadline = time.monotonic() + seconds
        while self.liveness(row)[0]:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return True

    def forget(self, task_id: str) -> None:
        """The job ended or is gone: stop tracking its child."""
        with self._lock:
            self._procs.pop(task_id, None)

    def reap(self, running: Iterable[str]) -> None:
        """Reap children whose job another process settled (not in `running`), so none stays
        a zombie."""
        running = set(running)
        with self._lock:
            for task_id, proc in list(self._procs.items()):
                if task_id not in running and proc.poll() is not None:
                    self._procs.pop(task_id)
