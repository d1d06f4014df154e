"""Starts queued fine-tuning jobs when nothing else is there to start them.

    python -m sage_tui.core.training.keeper HOME [--jobs-per-gpu N]

A job queued behind others must start when a GPU frees even if the TUI or the CLI that queued
it has exited (or its SSH session dropped). `Supervisor` starts this keeper, in its own
session, whenever it leaves a job queued and no keeper runs. The keeper holds `queue.lock`
while it polls the queue every couple of seconds, and exits once no job is queued; jobs it
started keep running on their own. Before exiting it looks at the queue once more without the
lock, so a job queued while it was deciding to stop is not stranded.
"""

from __future__ import annotations

import argparse
import fcntl
import sys
import time
from pathlib import Path

POLL_SECONDS = 2.0


def keep(home: Path, jobs_per_device: int, poll_seconds: float = POLL_SECONDS) -> None:
    """Poll the queue until it is empty (under the lock), then return."""
    from sage_tui.core.store import Store
    from sage_tui.core.training.supervisor import Supervisor
    from sage_tui.paths import Paths

    paths = Paths(home)
    store = Store(paths.db)
    supervisor = Supervisor(store, paths, jobs_per_device=jobs_per_device, hand_over=False)
    try:
        with open(paths.queue_lock, "a+") as lock:
            while True:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    while supervisor.queued():
                        for job in supervisor.poll():
                            print(f"{time.strftime('%H:%M:%S')} {job.id}: {job.status}")
                        time.sleep(poll_seconds)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
                if not supervisor.queued():
                    return
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sage_tui.core.training.keeper")
    parser.add_argument("home", type=Path)
    parser.add_argument("--jobs-per-gpu", type=int, default=1)
    args = parser.parse_args(argv)
    keep(args.home, args.jobs_per_gpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
