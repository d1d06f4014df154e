"""Fixtures and helpers for the supervisor tests: a store in a temporary home, supervisors
over it that start the fake runner (its mode chosen per task id), and ways to wait on jobs.

Loaded for every test module through `pytest_plugins` in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from sage_tui.core.store import Store
from sage_tui.core.training.job_rows import JobError
from sage_tui.core.training.placement import Device
from sage_tui.core.training.spec import JobSpec
from sage_tui.core.training.supervisor import Job, Supervisor
from sage_tui.paths import Paths

REPO = Path(__file__).resolve().parents[2]
FAKE_RUNNER = REPO / "tests" / "support" / "fake_runner.py"
TIMEOUT = 15.0


def fake_command(modes: dict[str, str]) -> Callable[[Path, bool], list[str]]:
    """A runner command that starts the fake runner in the mode chosen for the job."""

    def command(job_dir: Path, resume: bool) -> list[str]:
        mode = modes.get(job_dir.name, "ok")
        return [sys.executable, str(FAKE_RUNNER), str(job_dir), "--mode", mode] + (
            ["--resume"] if resume else []
        )

    return command


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "home").ensure()


@pytest.fixture
def store(paths: Paths) -> Store:
    opened = Store(paths.db)
    yield opened
    opened.close()


@pytest.fixture
def modes() -> dict[str, str]:
    return {}


@pytest.fixture
def supervisors(store: Store, paths: Paths, modes: dict[str, str]):
    """Makes supervisors over the test's store; every job still running is killed at the end."""
    made: list[Supervisor] = []

    def make(
        jobs_per_device: int = 1, over: Store | None = None, gpus: Sequence[Device] = ()
    ) -> Supervisor:
        sup = Supervisor(
            over or store,
            paths,
            runner_command=fake_command(modes),
            jobs_per_device=jobs_per_device,
            devices=lambda: gpus,
        )
        made.append(sup)
        return sup

    yield make
    for job in made[0].list() if made else []:
        if job.status == "running" and job.pid:
            with contextlib.suppress(OSError):
                os.killpg(job.pid, signal.SIGKILL)


@pytest.fixture
def sup(supervisors) -> Supervisor:
    return supervisors()


@pytest.fixture
def spec_for(tmp_path: Path) -> Callable[[str], JobSpec]:
    base = tmp_path / "base"
    base.mkdir()
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')

    def make(task_id: str) -> JobSpec:
        return JobSpec(task_id=task_id, base_model="tiny", base_path=str(base), dataset=str(data))

    return make


def wait_for(
    sup: Supervisor, task_id: str, predicate: Callable[[Job], bool], timeout: float = TIMEOUT
) -> Job:
    """Poll until the job satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    while True:
        sup.poll()
        job = sup.get(task_id)
        if predicate(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {job}")
        time.sleep(0.05)


def ended(job: Job) -> bool:
    return job.status not in ("queued", "running")


def stepping(job: Job) -> bool:
    return job.status == "running" and (job.progress.step or 0) >= 1


def argv_runs(job: Job) -> list[list[str]]:
    lines = (job.output_dir / "argv.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] != "Z"


class FixedJobs:
    """The supervisor calls the App and the studio make, answering with fixed jobs (for
    screens and desks whose jobs' states are what is under test)."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = list(jobs)

    def reattach(self) -> list[Job]:
        return []

    def poll(self) -> list[Job]:
        return []

    def list(self) -> list[Job]:
        return list(self.jobs)

    def get(self, task_id: str) -> Job:
        for job in self.jobs:
            if job.id == task_id:
                return job
        raise JobError(f"no job {task_id!r}")
