"""The store at scale: 5,000 conversations and 1,000 jobs still list in under 100 ms.

The home is real and built cheaply once per module: rows go in with `executemany` in one
transaction each, every job gets a real folder with an events log the size a short training
run writes. What is timed is what the front ends call: the Chat screen's conversation list
(`ConversationStore.recent`) and the job listing the Finetune screen and `jobs list` show
(`JobDesk.list` / `JobDesk.poll`, which read each job's events from its folder).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from sage_tui.config import Settings
from sage_tui.core.conversations import ConversationStore
from sage_tui.core.store import Store
from sage_tui.core.training.job_folder import JobFolder
from sage_tui.core.training.job_rows import JobRows
from sage_tui.core.training.jobs import JobProgress
from sage_tui.core.training.spec import JobSpec
from sage_tui.core.training.supervisor import Supervisor
from sage_tui.services import Services, open_services
from tests.conftest import REPO, FakeMonitor, no_gpu_snapshot
from tests.support.fake_engine import FakeEngines
from tests.support.store_timing import fresh_desk, listing

CONVERSATIONS = 5_000
MESSAGES_EACH = 4
JOBS = 1_000
STEPS_EACH = 40
"""Step events in each job's log: a short run's worth."""
BUDGET = 0.100
"""Seconds: the median of five listings must stay under this."""


def fill_conversations(store: Store) -> None:
    now = time.time() - CONVERSATIONS
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO conversations (id, title, model, created_at, updated_at)"
            " VALUES (?, ?, 'm', ?, ?)",
            ((n, f"chat {n}", now + n, now + n) for n in range(1, CONVERSATIONS + 1)),
        )
        db.executemany(
            "INSERT INTO messages (conversation_id, role, content, stats, created_at)"
            " VALUES (?, ?, ?, '{}', ?)",
            (
                (n, ("user", "assistant")[m % 2], f"message {m} of chat {n} " * 8, now + n)
                for n in range(1, CONVERSATIONS + 1)
                for m in range(MESSAGES_EACH)
            ),
        )


def fill_jobs(store: Store, settings: Settings) -> None:
    """Ended jobs as the supervisor leaves them: a folder with an events log each, and the row
    settled with the progress those events add up to (the settling itself is
    `test_an_ended_job_is_listed_without_reading_its_folder`'s)."""
    kept = JobProgress(STEPS_EACH, STEPS_EACH, 2.0 / STEPS_EACH, None, 900.0, None).to_json()
    rows = []
    for n in range(JOBS):
        task_id = f"ft-scale-{n:04d}"
        folder = settings.paths.job_dir(task_id)
        folder.mkdir(parents=True)
        started = 1_700_000_000.0 + n * 100
        JobFolder(folder).events_file.write_text(events_log(started))
        spec = JobSpec(task_id, "base", "/models/base", "/data/train.jsonl", max_steps=STEPS_EACH)
        rows.append((task_id, spec.to_json(), str(folder), started, started, started + 50, kept))
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO jobs (id, base_model, dataset, status, spec, output_dir, created_at,"
            " started_at, finished_at, progress)"
            " VALUES (?, 'base', '/data/train.jsonl', 'completed', ?, ?, ?, ?, ?, ?)",
            rows,
        )


def events_log(started: float, steps: int = STEPS_EACH) -> str:
    """What a runner writes for a short run that finished."""
    lines: list[dict] = [{"kind": "started", "time": started, "total_steps": steps}]
    lines += [
        {
            "kind": "step",
            "time": started + step,
            "step": step,
            "total_steps": steps,
            "loss": 2.0 / step,
            "learning_rate": 2e-4,
            "tokens_per_second": 900.0,
            "eta_seconds": float(steps - step),
        }
        for step in range(1, steps + 1)
    ]
    lines.append({"kind": "finished", "time": started + steps + 1})
    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.fixture(scope="module")
def big_home(tmp_path_factory: pytest.TempPathFactory) -> Services:
    """Services over a home with 5,000 conversations and 1,000 ended jobs."""
    home = tmp_path_factory.mktemp("big") / "home"
    settings = Settings.load(home=home).with_changes(default_model="")
    services = open_services(
        settings,
        monitor=FakeMonitor(no_gpu_snapshot()),
        engine_factory=FakeEngines(),
        devices=lambda: [],
    )
    fill_conversations(services.store)
    fill_jobs(services.store, settings)
    yield services
    services.close()


def test_the_store_at_scale_lists_in_under_100_ms(big_home: Services) -> None:
    """The Chat screen's conversation list; the job list as `jobs list` reads it in a fresh
    process and as the Finetune screen's poll reads it every second (cells formatted). The
    figures are taken in a process of their own (`tests/support/store_timing.py`): this one
    holds what every earlier test left, a load no `jobs list` carries."""
    chats = ConversationStore(big_home.store)
    newest = chats.recent()
    assert len(newest) == 100 and newest[0].title == f"chat {CONVERSATIONS}"
    cells = listing(fresh_desk(big_home))
    assert len(cells) == JOBS and cells[0].id == f"ft-scale-{JOBS - 1:04d}"
    assert cells[0].status == "completed" and cells[0].loss == f"{2.0 / STEPS_EACH:.4f}"

    child = subprocess.run(
        [sys.executable, "-m", "tests.support.store_timing", str(big_home.settings.home)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    timings = json.loads(child.stdout.strip().splitlines()[-1])
    assert set(timings) == {"conversations", "jobs, fresh process", "jobs, poll"}
    assert all(seconds < BUDGET for seconds in timings.values()), timings


def test_an_ended_job_is_listed_without_reading_its_folder(services: Services) -> None:
    """The supervisor keeps an ended job's progress in its row: the listing matches what
    reading the events gives, and does not read them again (nor does a fresh process)."""
    supervisor = services.supervisor
    paths = services.settings.paths
    folder = paths.job_dir("ft-kept")
    folder.mkdir(parents=True)
    JobFolder(folder).events_file.write_text(events_log(time.time() - 60, steps=6))
    spec = JobSpec("ft-kept", "base", "/models/base", "/data/train.jsonl", max_steps=6)
    JobRows(services.store).insert(spec, str(folder))
    with services.store.transaction() as db:  # as a runner that ended while no one watched
        db.execute(
            "UPDATE jobs SET status = 'running', started_at = ? WHERE id = 'ft-kept'",
            (time.time() - 61,),
        )
    read = supervisor.get("ft-kept").progress
    supervisor.poll()  # the process is gone: settled, progress kept
    assert supervisor.get("ft-kept").status.value == "completed"

    JobFolder(folder).events_file.unlink()  # listing must not need it any more
    fresh = Supervisor(services.store, paths, devices=lambda: [])
    for listed in (supervisor.list()[0], fresh.list()[0]):
        assert listed.progress == replace(read, eta_seconds=None)
        assert listed.progress.step == 6 and listed.progress.last_loss == 2.0 / 6
