"""The processes behind jobs: the runner's command line, the host's GPUs for the queue,
whether a recorded pid still runs a job, signalling a job's process group and starting the queue
keeper.

Every child starts clean: Python's safe-path mode (PYTHONSAFEPATH, 3.11+) keeps the script's
folder and the current folder off its import path, and its working directory is one of ours
(the job folder, SAGE_HOME), so a `json.py` in the user's folder is never imported. A recorded
pid counts as a job's runner only when its argv names the job folder as a whole argument right
after the runner (module or script) and the process started no earlier than the job did.

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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sage_tui.core.gpu_scope import GpuScope, startup_scope
from sage_tui.core.log_files import rotate
from sage_tui.core.private_files import PRIVATE_UMASK, private_dirs, private_open
from sage_tui.core.training.placement import Device
from sage_tui.paths import Paths

if TYPE_CHECKING:
    from sage_tui.core.gpu import ResourceMonitor


RUNNER_MODULE = "sage_tui.core.training.runner"
START_SLACK_SECONDS = 2.0
"""How much earlier than the job's recorded start its process may seem to have started (the
start is recorded just before the spawn; clock ticks and boot time round)."""


def default_runner_command(job_dir: Path, resume: bool) -> list[str]:
    """The real runner's command line for a job folder."""
    command = [sys.executable, "-m", RUNNER_MODULE, str(job_dir)]
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
    command: list[str], log_path: Path, header: str, cwd: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session (it outlives us), stdin closed, output appended to
    `log_path` after `header`, with the whole environment `env`, in `cwd`.

    PYTHONSAFEPATH (inherited by what it starts, a DDP re-exec too) keeps the current and the
    script's folder off a Python child's import path; Python 3.10 ignores it, so `cwd` is always
    one of our folders.
    """
    with open(log_path, "ab", opener=private_open) as log:
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
            env={**env, "PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1"},
            # What it writes before its own main runs (and what its libraries save) is private.
            umask=PRIVATE_UMASK,
        )


def pid_runs_job(
    pid: int | None,
    job_dir: Path,
    started_at: float | None = None,
    commands: Iterable[Sequence[str]] = (),
) -> bool:
    """Whether `pid` is a live process running the runner of the job in `job_dir`.

    Guards against pid reuse and look-alikes: its argv must hold `job_dir` as a whole argument
    right after the runner (`-m sage_tui.core.training.runner`, also under a DDP re-exec, or
    the program of one of `commands`, the command lines the supervisor starts: see
    `runner_identity`), and it must have started no earlier than `started_at` (seconds since
    the epoch, the job's recorded start) less a small slack. A zombie counts as ended, and so
    does a process whose details cannot be read.
    """
    if not pid or pid <= 0:
        return False
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        argv = process.cmdline()
        created = process.create_time()
    except (psutil.Error, OSError):
        return False  # gone, a zombie, or not ours to read
    if started_at and created < started_at - START_SLACK_SECONDS:
        return False  # the pid was reused by an older process
    target = str(job_dir)
    identities = {("-m", RUNNER_MODULE)}
    identities.update(runner_identity(command, target) for command in commands)
    identities.discard(())
    return any(
        tuple(argv[i - len(ident) : i]) == ident
        for i, arg in enumerate(argv)
        if arg == target
        for ident in identities
        if i >= len(ident)
    )


def runner_identity(command: Sequence[str], job_arg: str) -> tuple[str, ...]:
    """What names the program in a runner command line: the arguments just before `job_arg`,
    from the last `-m`/`-c` on (`("-m", module)`), else the one before it (a script).

    Empty when `job_arg` is not an argument of `command` or nothing precedes it.
    """
    command = list(command)
    if job_arg not in command:
        return ()
    at = command.index(job_arg)
    before = command[1:at]  # the interpreter itself may be named differently
    for i in range(len(before) - 1, -1, -1):
        if before[i] in ("-m", "-c"):
            return tuple(before[i:])
    return tuple(before[-1:])


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
    with open(paths.queue_lock, "a+", opener=private_open) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a keeper runs; it reads the queue again before it exits
        fcntl.flock(lock, fcntl.LOCK_UN)
    private_dirs(paths.queue_log.parent)
    rotate(paths.queue_log)  # no keeper runs, so none writes to it
    command = [sys.executable, "-m", "sage_tui.core.training.keeper", str(paths.home)]
    command += ["--jobs-per-gpu", str(jobs_per_device)]
    env = (scope or startup_scope()).base_env()
    _detached(command, paths.queue_log, "", paths.home, env)
    return True
