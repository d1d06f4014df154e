"""Training on several workers (DDP) without opening a network port.

`torch.distributed.run` meets its workers through torch's TCPStore, and in torch 2.13 that
store listens on every interface (`::`) whatever host it is given: on a shared GPU box any
machine that can reach it could talk to the job's rendezvous for as long as it trains. One
machine's workers need no network to meet, so the runner starts them itself: each worker is
the runner again with RANK / LOCAL_RANK / WORLD_SIZE set, and they join one process group
through a FileStore in the job's (private) folder. The collective backends are told to use
the loopback interface (`core.child_env.loopback_collectives`), so what they open is
reachable from this machine only.

The runner that started the workers stays their parent under the same pid the supervisor
follows: a signal to its process group reaches every worker; one it gets alone is passed on;
when a worker fails the others are stopped; and each worker dies with its parent (Linux's
parent-death signal), so a runner killed with SIGKILL leaves no worker training on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from sage_tui.core.child_env import loopback_collectives

RENDEZVOUS_ENV = "SAGE_RENDEZVOUS"
RENDEZVOUS_FILE = ".rendezvous"
# How long the other workers get to stop after one has failed, before they are killed.
STOP_GRACE_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


def worker_env(
    base: Mapping[str, str], rank: int, workers: int, rendezvous: Path, threads: str
) -> dict[str, str]:
    """The environment of worker `rank` of `workers`."""
    return {
        **base,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(workers),
        "LOCAL_WORLD_SIZE": str(workers),
        RENDEZVOUS_ENV: str(rendezvous),
        "OMP_NUM_THREADS": threads,
        **loopback_collectives(base),
    }


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this (just forked) worker when its parent, the runner, dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_workers(job_dir: Path, resume: bool, workers: int, threads: str) -> int:
    """Train the job in `job_dir` with `workers` workers; the first failing exit code, else 0."""
    rendezvous = job_dir / RENDEZVOUS_FILE
    rendezvous.unlink(missing_ok=True)  # a FileStore left by a killed run would not rendezvous
    command = [sys.executable, "-m", "sage_tui.core.training.runner", str(job_dir)]
    if resume:
        command.append("--resume")
    children = [
        subprocess.Popen(
            command,
            env=worker_env(os.environ, rank, workers, rendezvous, threads),
            preexec_fn=_die_with_parent,
        )
        for rank in range(workers)
    ]

    def pass_on(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(OSError):
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, pass_on)
    try:
        return _wait(children)
    finally:
        rendezvous.unlink(missing_ok=True)


def _wait(children: list[subprocess.Popen]) -> int:
    while True:
        codes = [child.poll() for child in children]
        failed = next((code for code in codes if code not in (None, 0)), None)
        if failed is not None:
            _stop(children)
            return failed
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.2)


def _stop(children: list[subprocess.Popen]) -> None:
    """Stop the workers still running: SIGTERM, then SIGKILL after the grace period."""
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(OSError):
                child.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def join_process_group(env: Mapping[str, str] = os.environ) -> None:
    """In a worker started by `run_workers`: join the others before the trainer is built
    (accelerate then uses this group rather than making one over TCP). Elsewhere: nothing."""
    rendezvous = env.get(RENDEZVOUS_ENV)
    if not rendezvous:
        return
    import torch
    import torch.distributed as dist

    rank, workers = int(env["RANK"]), int(env["WORLD_SIZE"])
    if torch.cuda.is_available():
        torch.cuda.set_device(int(env["LOCAL_RANK"]))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(
        backend, init_method=Path(rendezvous).as_uri(), rank=rank, world_size=workers
    )
