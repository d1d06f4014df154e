"""The processes behind jobs: the runner's command line, the host's GPUs for the queue,
whether a recorded pid still runs a job, signalling a job's process group and starting the queue
keeper.

The GPUs a child sees come from the user's CUDA_VISIBLE_DEVICES as captured at start-up
(`gpu_scope`), never from whatever os.environ holds at the moment: an engine being started
changes it for a few seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sage_tui.core.gpu_scope import GpuScope, startup_scope
from sage_tui.core.training.placement import Device
from sage_tui.paths import Paths

if TYPE_CHECKING:
    from sage_tui.core.gpu import ResourceMonitor


def default_runner_command(job_dir: Path, resume: bool) -> list[str]:
    """The real runner's command line for a job folder."""
    command = [sys.executable, "-m", "sage_tui.core.training.runner", str(job_dir)]
    return [*command, "--resume"] if resume else command


class HostDevices:
    """The host's GPUs for the queue: NVML's, inside the user's CUDA_VISIBLE_DEVICES.

    `scope` defaults to the process's start-up scope, `monitor` to a ResourceMonitor over it.
    Raises GpusUnreadable (a SageError) when the GPUs cannot be read: the queue then waits
    instead of putting jobs on the CPU or on GPUs it cannot see.
    """

    def __init__(
        self, scope: GpuScope | None = None, monitor: ResourceMonitor | None = None
    ) -> None:
        self.scope = scope or startup_scope()
        self._monitor: Any = monitor

    def __call__(self) -> list[Device]:
        from sage_tui.core.gpu import ResourceMonitor

        if self._monitor is None:
            self._monitor = ResourceMonitor(scope=self.scope)
        snapshot = self._monitor.sample()
        shown = {gpu.index for gpu in self.scope.usable(snapshot)}
        limit = self.scope.describe()
        # Hidden GPUs are listed too, flagged, so a job pinned to one hears why it is refused.
        return [
            Device(gpu.index, gpu.memory_free, "" if gpu.index in shown else limit)
            for gpu in snapshot.gpus
        ]


def spawn_runner(
    command: list[str],
    job_dir: Path,
    log_path: Path,
    header: str,
    gpus: tuple[int, ...],
    scope: GpuScope | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a runner in its own session, output appended to its log after a header line.

    It sees only `gpus` (NVML numbers; none for a CPU job), named as the user's
    CUDA_VISIBLE_DEVICES names them (`scope`, default the start-up scope). OSError when it
    cannot be started. `extra_env` adds variables (the runner's CPU share).
    """
    scope = scope or startup_scope()
    env = {**scope.base_env(), **scope.child_env(gpus), **(extra_env or {})}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return _detached(
        command, log_path, f"\n=== {stamp} {header}: {' '.join(command)}\n", job_dir, env
    )


def _detached(
    command: list[str], log_path: Path, header: str, cwd: Path | None, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session (it outlives us), stdin closed, output appended to
    `log_path` after `header`, with the whole environment `env`."""
    with open(log_path, "ab") as log:
        log.write(header.encode())
        log.flush()
        return subprocess.Popen(
            command,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            close_fds=True,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )


def pid_runs_job(pid: int | None, job_dir: Path) -> bool:
    """Whether `pid` is a live process whose command line names `job_dir` (a pid-reuse guard).

    A zombie counts as ended. Without /proc (not Linux) only the pid is checked.
    """
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else; the command line decides
    proc = Path("/proc")
    if not (proc / "self").exists():
        return True
    try:
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
        stat = (proc / str(pid) / "stat").read_text(errors="replace")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]
    if state in (["Z"], ["X"]):
        return False
    return str(job_dir).encode() in cmdline


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group `pid` leads (a runner leads its own session); a process that
    does not lead one (not one we started) gets the signal alone."""
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return
    with contextlib.suppress(OSError):
        if pgid == pid:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)


def start_keeper(paths: Paths, jobs_per_device: int, scope: GpuScope | None = None) -> bool:
    """Start the queue keeper (`training.keeper`) unless one runs; True if one was started.

    It sees the GPUs as the user set them (`scope`, default the start-up scope), so it places
    jobs inside the same scope as the studio.
    """
    with open(paths.queue_lock, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a keeper runs; it reads the queue again before it exits
        fcntl.flock(lock, fcntl.LOCK_UN)
    paths.queue_log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "sage_tui.core.training.keeper", str(paths.home)]
    command += ["--jobs-per-gpu", str(jobs_per_device)]
    _detached(command, paths.queue_log, "", None, (scope or startup_scope()).base_env())
    return True
