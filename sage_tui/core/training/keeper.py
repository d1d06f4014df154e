"""Starts queued fine-tuning jobs when nothing else is there to start them.

    python -m sage_tui.core.training.keeper HOME [--jobs-per-gpu N]

A job queued behind others must start when a GPU frees even if the TUI or the CLI that queued
it has exited (or its SSH session dropped). `Supervisor` starts this keeper, in its own
session, whenever it leaves a job queued and no keeper runs. The keeper holds `queue.lock`
while it polls the queue every couple of seconds, and exits once no job is queued; jobs it
started keep running on their own. Before exiting it looks at the queue once more without the
lock, so a job queued while it was deciding to stop is not stranded.

Its output is `queue.log`. A poll that fails (the database locked by another process, a disk
error, the process table unreadable) is written there with the reason and tried again at the
next tick; only a fault that lasts GIVE_UP_SECONDS stops the keeper, with a line saying so
(the next sage-tui or CLI command that finds jobs queued starts a new one).
"""

from __future__ import annotations

import argparse
import fcntl
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from sage_tui.core.training.supervisor import Supervisor

POLL_SECONDS = 2.0
GIVE_UP_SECONDS = 600.0
"""How long polls may keep failing before the keeper gives up (ten minutes)."""
EXIT_GAVE_UP = 1


def keep(
    home: Path,
    jobs_per_device: int,
    poll_seconds: float = POLL_SECONDS,
    *,
    give_up_seconds: float = GIVE_UP_SECONDS,
    supervisor: Supervisor | None = None,
    log: TextIO | None = None,
) -> int:
    """Poll the queue until it is empty (under the lock): 0, or EXIT_GAVE_UP after polls
    failed for `give_up_seconds`. `supervisor` defaults to one over HOME's database."""
    from sage_tui.core.private_files import private_open
    from sage_tui.core.store import Store
    from sage_tui.core.training.supervisor import Supervisor
    from sage_tui.errors import describe_error
    from sage_tui.paths import Paths

    out = log or sys.stdout
    paths = Paths(home)

    def say(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", file=out, flush=True)

    store = None
    if supervisor is None:
        try:
            store = Store(paths.db)
        except Exception as err:  # any failure to open: one line, not a traceback
            say(f"keeper stopped: cannot open the database: {describe_error(err)}")
            return EXIT_GAVE_UP
        supervisor = Supervisor(store, paths, jobs_per_device=jobs_per_device, hand_over=False)
    failing_since: float | None = None

    def queued() -> bool:
        """Whether jobs wait; True when that cannot be read (the next tick asks again)."""
        nonlocal failing_since
        try:
            waiting = bool(supervisor.queued())
            if waiting:
                for job in supervisor.poll():
                    say(f"{job.id}: {job.status}")
        except Exception as err:  # a keeper outlives any one failed poll
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since >= give_up_seconds:
                raise GaveUp(describe_error(err)) from None
            say(f"poll failed, trying again in {poll_seconds:g} s: {describe_error(err)}")
            return True
        if failing_since is not None:
            say("polls work again")
            failing_since = None
        return waiting

    try:
        with open(paths.queue_lock, "a+", opener=private_open) as lock:
            while True:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    while queued():
                        time.sleep(poll_seconds)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
                if not queued():
                    return 0
    except GaveUp as err:
        say(
            f"keeper stopped: polls failed for {give_up_seconds:g} s, last: {err}; queued"
            " jobs wait until sage-tui or a sage-tui command starts a keeper again"
        )
        return EXIT_GAVE_UP
    finally:
        if store is not None:
            store.close()


class GaveUp(Exception):
    """Polls kept failing for longer than the keeper waits."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sage_tui.core.training.keeper")
    parser.add_argument("home", type=Path)
    parser.add_argument("--jobs-per-gpu", type=int, default=1)
    args = parser.parse_args(argv)
    from sage_tui.core.private_files import keep_private

    keep_private()  # what it starts (runners) and writes (queue.lock) stays the user's
    return keep(args.home, args.jobs_per_gpu)


if __name__ == "__main__":
    sys.exit(main())
