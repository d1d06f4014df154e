"""Time the listings of a big home in a process of its own, as `sage-tui jobs list` and a
freshly started studio read it (the test process holds what every earlier test left, which
slows allocation and the collector: a figure the user never meets).

    python -m tests.support.store_timing HOME     # prints the medians as JSON
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sage_tui.config import Settings
from sage_tui.core.conversations import ConversationStore
from sage_tui.core.training.supervisor import Supervisor
from sage_tui.services import Services, open_services
from sage_tui.studio.formatting import job_cells
from sage_tui.studio.jobs import JobDesk
from sage_tui.studio.state import Observers


def median_seconds(listing: Callable[[], object], runs: int = 5) -> float:
    """The median wall time of `runs` calls of `listing`."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        listing()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fresh_desk(services: Services) -> JobDesk:
    """A job desk over a supervisor that has read nothing yet, as in a new process."""
    supervisor = Supervisor(services.store, services.settings.paths, devices=lambda: [])
    return JobDesk(replace(services, supervisor=supervisor), Observers())


def listing(desk: JobDesk) -> list:
    """The job table's cells, as the Finetune screen and `jobs list` build them."""
    return [job_cells(job) for job in desk.list()]


def timings(services: Services) -> dict[str, float]:
    chats = ConversationStore(services.store)
    first = fresh_desk(services)
    listing(first)
    return {
        "conversations": median_seconds(chats.recent),
        "jobs, fresh process": median_seconds(lambda: listing(fresh_desk(services))),
        "jobs, poll": median_seconds(first.poll),
    }


def main(home: str) -> int:
    settings = Settings.load(home=Path(home)).with_changes(default_model="")
    services = open_services(settings, devices=lambda: [])
    try:
        print(json.dumps(timings(services)))
    finally:
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
