"""The processes behind jobs: the runner's command line, the host's GPUs for the queue,
whether a recorded pid still runs a job, signalling a job's process group, starting the queue
keeper, and writing files atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sage_tui.core.training.placement import Device, visible_gpus
from sage_tui.paths import Paths


def default_runner_command(job_dir: Path, resume: bool) -> list[str]:
    """The real runner's command line for a job folder."""
    command = [sys.executable, "-m", "sage_tui.core.training.runner", str(job_dir)]
    return [*command, "--resume"] if resume else command


class HostDevices:
    """The host's GPUs for the queue: NVML's, limited by the caller's CUDA_VISIBLE_DEVICES."""

    def __init__(self) -> None:
        self._monitor: Any = None

    def __call__(self) -> list[Device]:
        from sage_tui.core.gpu import ResourceMonitor

        if self._monitor is None:
            self._monitor = ResourceMonitor()
        allowed = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"))
        return [
            Device(gpu.index, gpu.memory_free)
            for gpu in self._monitor.sample().gpus
            if allowed is None or gpu.index in allowed
        ]


def spawn_runner(
    command: list[str], job_dir: Path, log_path: Path, header: str, gpus: tuple[int, ...]
) -> subprocess.Popen[bytes]:
    """Start a runner in its own session, output appended to its log after a header line.

    It sees only `gpus`, numbered as NVML numbers them (none for a CPU job). OSError when it
    cannot be started.
    """
    # A job placed on the CPU sees no GPU either: were NVML broken on a GPU machine, the job
    # must not take every GPU of a shared box.
    env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
    if gpus:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return _detached(
        command, log_path, f"\n=== {stamp} {header}: {' '.join(command)}\n", job_dir, env
    )


def _detached(
    command: list[str], log_path: Path, header: str, cwd: Path | None, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session (it outlives us), stdin closed, output appended to
    `log_path` after `header`."""
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
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
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


def start_keeper(paths: Paths, jobs_per_device: int) -> bool:
    """Start the queue keeper (`training.keeper`) unless one runs; True if one was started."""
    with open(paths.queue_lock, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a keeper runs; it reads the queue again before it exits
        fcntl.flock(lock, fcntl.LOCK_UN)
    paths.queue_log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "sage_tui.core.training.keeper", str(paths.home)]
    command += ["--jobs-per-gpu", str(jobs_per_device)]
    _detached(command, paths.queue_log, "", None, {})
    return True


def write_atomic(path: Path, text: str) -> None:
    """Write a file so readers see the old content or the new, never half of it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
