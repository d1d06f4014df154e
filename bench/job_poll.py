"""What following a job costs per step: the Finetune screen's detail (losses + log tail) and the
supervisor's read of a job, at 100 and at 10,000 steps, incremental (as the studio does it now)
vs a whole re-read of events.jsonl (as the screen did before issue 9), in the same run.

Each round appends one step event (as the runner does, through `EventWriter`) and then times
one read of each kind; the figures are medians over the rounds, and the bytes each read took
from the disk (the kernel's count, /proc/self/io `rchar`). The home, the job and its events are
real files in a temporary folder; no training runs.

    .venv/bin/python bench/job_poll.py [--rounds 50] [--steps 100,10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def step_line(step: int, total: int) -> str:
    """One step event as the runner writes it."""
    record = {
        "kind": "step",
        "time": time.time(),
        "step": step,
        "total_steps": total,
        "epoch": step / total,
        "loss": 2.0 / step,
        "learning_rate": 2e-4,
        "tokens_per_second": 1000.0 + step,
        "eta_seconds": float(total - step),
    }
    return json.dumps(record) + "\n"


def read_chars() -> int:
    """Bytes read by this process so far (0 where /proc/self/io is missing)."""
    try:
        with open("/proc/self/io", encoding="ascii") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("rchar"))
    except OSError:
        return 0


def whole_reread(supervisor, task_id: str) -> list[float]:
    """What the screen's read_detail did before: every event from byte 0, then the losses."""
    events, _ = supervisor.events(task_id)
    return [
        float(loss)
        for e in events
        if e.kind == "step"
        and isinstance(loss := e.data.get("loss"), (int, float))
        and not isinstance(loss, bool)
    ]


def measure(steps: int, rounds: int, home: Path) -> dict[str, tuple[float, float]]:
    """Median ms and bytes per read, for each kind of read, on a job of `steps` steps."""
    from sage_tui.core.store import Store
    from sage_tui.core.training.events import EventWriter
    from sage_tui.core.training.spec import JobSpec
    from sage_tui.core.training.supervisor import Supervisor
    from sage_tui.paths import Paths
    from sage_tui.studio.job_detail import JobDetails

    paths = Paths(home).ensure()
    store = Store(paths.db)
    supervisor = Supervisor(store, paths, devices=lambda: [])
    (home / "base").mkdir(exist_ok=True)
    data = home / "data.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    task_id = f"bench-{steps}"
    job = supervisor.create(JobSpec(task_id, "base", str(home / "base"), str(data)))
    total = steps + rounds + 1
    job.folder.events_file.write_text("".join(step_line(s, total) for s in range(1, steps + 1)))
    job.folder.log_file.write_text("".join(f"step {s} ...\n" for s in range(1, steps + 1)))
    details = JobDetails()
    details.read(supervisor.get(task_id))  # the first read of each takes the whole file
    supervisor.get(task_id)

    reads: dict[str, Callable[[], object]] = {
        "screen detail, whole re-read (before)": lambda: (
            whole_reread(supervisor, task_id),
            job.folder.log_tail(),
        ),
        "screen detail, incremental (studio.jobs.detail)": lambda: details.read(
            supervisor.get(task_id)
        ),
        "supervisor get (poll of one job)": lambda: supervisor.get(task_id),
    }
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in reads}
    writer = EventWriter(job.folder.path)
    for n in range(rounds):
        event = json.loads(step_line(steps + 1 + n, total))
        writer.write(event.pop("kind"), **{k: v for k, v in event.items() if k != "time"})
        for name, read in reads.items():
            before, started = read_chars(), time.perf_counter()
            read()
            samples[name].append((time.perf_counter() - started, read_chars() - before))
    writer.close()
    store.close()
    return {
        name: (
            statistics.median(t for t, _ in taken) * 1000,
            statistics.median(b for _, b in taken),
        )
        for name, taken in samples.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--steps", default="100,10000")
    args = parser.parse_args()
    sizes = [int(part) for part in args.steps.split(",")]
    cpus = os.cpu_count()
    print(f"# job poll: {cpus} CPUs, Python {platform.python_version()}, {args.rounds} rounds")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in sizes:
            results[steps] = measure(steps, args.rounds, Path(tmp) / f"home-{steps}")
    header = " | ".join(f"{steps:,} steps: ms / bytes" for steps in sizes)
    print(f"| read, per step | {header} |")
    print("| --- |" + " --- |" * len(sizes))
    for name in results[sizes[0]]:
        cells = " | ".join(
            f"{results[s][name][0]:.2f} ms / {results[s][name][1]:,.0f} B" for s in sizes
        )
        print(f"| {name} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
