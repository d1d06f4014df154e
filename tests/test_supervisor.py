"""The training supervisor, with a fake runner: start, follow, cancel, resume, re-attach.

The queue (slots, GPUs, pinning) is in test_supervisor_queue.py; the fixtures (`sup`,
`supervisors`, `spec_for`, `modes`, `store`, `paths`) in tests/support/supervising.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sage_tui.core.store import Store
from sage_tui.core.training.jobs import STATUSES
from sage_tui.core.training.processes import default_runner_command
from sage_tui.core.training.spec import JobSpec
from sage_tui.core.training.supervisor import JobError, Supervisor
from sage_tui.paths import Paths
from tests.support.supervising import (
    FAKE_RUNNER,
    REPO,
    TIMEOUT,
    argv_runs,
    ended,
    pid_alive,
    stepping,
    wait_for,
)

# -- outcomes ---------------------------------------------------------------------------------


def test_default_command_runs_the_runner_module(tmp_path: Path) -> None:
    assert default_runner_command(tmp_path, False) == [
        sys.executable,
        "-m",
        "sage_tui.core.training.runner",
        str(tmp_path),
    ]
    assert default_runner_command(tmp_path, True)[-1] == "--resume"
    assert STATUSES == ("queued", "running", "completed", "failed", "cancelled", "interrupted")


def test_submit_runs_to_completion_with_progress(sup: Supervisor, spec_for, paths: Paths) -> None:
    job = sup.submit(spec_for("ok-job"))
    assert job.status == "running" and job.pid and job.started_at
    assert job.output_dir == paths.job_dir("ok-job")
    assert JobSpec.from_file(job.output_dir / "spec.json") == spec_for("ok-job")
    done = wait_for(sup, "ok-job", ended)
    assert done.status == "completed", done.error
    assert done.error is None and done.finished_at >= done.started_at
    assert (done.progress.step, done.progress.total_steps, done.progress.last_loss) == (4, 4, 0.5)
    assert done.progress.tokens_per_second == 1004.0 and done.progress.eta_seconds is None
    assert done.progress.fraction == 1.0
    assert sup.last_checkpoint("ok-job") == done.output_dir / "checkpoints" / "checkpoint-4"
    assert argv_runs(done) == [[str(done.output_dir), "--mode", "ok"]]
    assert (done.output_dir / "train.log").is_file()
    events, offset = sup.events("ok-job")
    assert events[0].kind == "started" and events[-1].kind == "finished"
    assert sup.events("ok-job", offset) == ([], offset)
    # A fresh supervisor (a new launch) reads the progress back from the events.
    assert Supervisor(sup.store, paths).get("ok-job").progress.last_loss == 0.5


def test_failure_carries_reason_and_suggestion(sup: Supervisor, spec_for, modes) -> None:
    modes["bad"] = "fail"
    sup.submit(spec_for("bad"))
    job = wait_for(sup, "bad", ended)
    assert job.status == "failed"
    assert job.error == "out of memory. Lower the batch size."
    with pytest.raises(JobError, match="no checkpoint"):
        sup.start("bad", resume=True)


def test_crash_without_result_is_interrupted(sup: Supervisor, spec_for, modes) -> None:
    modes["boom"] = "crash"
    sup.submit(spec_for("boom"))
    job = wait_for(sup, "boom", ended)
    assert job.status == "interrupted"
    assert "ended without a result" in job.error and "exit code 9" in job.error
    assert job.progress.step == 1


def test_exit_zero_without_finished_event_fails(sup: Supervisor, spec_for, tmp_path: Path) -> None:
    sup.runner_command = lambda job_dir, resume: [sys.executable, "-c", "pass", str(job_dir)]
    sup.submit(spec_for("quiet"))
    job = wait_for(sup, "quiet", ended)
    assert job.status == "failed" and "without finishing" in job.error


# -- cancel and resume ------------------------------------------------------------------------


def test_cancel_then_resume_completes(sup: Supervisor, spec_for, modes) -> None:
    modes["long"] = "hang"
    sup.submit(spec_for("long"))
    wait_for(sup, "long", stepping)
    job = sup.cancel("long", grace_seconds=10)
    assert job.status == "cancelled", job.error
    assert job.finished_at and not (job.output_dir / "STOP").exists()
    checkpoint = sup.last_checkpoint("long")
    assert checkpoint is not None and any(checkpoint.iterdir())
    stopped_at = int(checkpoint.name.split("-")[1])
    assert stopped_at >= 1
    assert sup.cancel("long").status == "cancelled"  # already ended: unchanged

    modes["long"] = "ok"
    resumed = sup.start("long", resume=True)
    assert resumed.status == "running" and resumed.error is None and resumed.finished_at is None
    done = wait_for(sup, "long", ended)
    assert done.status == "completed", done.error
    assert argv_runs(done)[-1][-1] == "--resume"
    assert done.progress.step == stopped_at + 4


def test_stubborn_runner_is_killed_and_interrupted(sup: Supervisor, spec_for, modes) -> None:
    modes["mule"] = "stubborn"
    sup.submit(spec_for("mule"))
    wait_for(sup, "mule", stepping)
    started = time.monotonic()
    job = sup.cancel("mule", grace_seconds=0.3, term_seconds=0.3)
    assert time.monotonic() - started < 5
    assert job.status == "interrupted"
    assert "SIGKILL" in job.error
    assert not pid_alive(job.pid)


def test_cancel_queued_job_at_once(supervisors, spec_for, modes) -> None:
    sup = supervisors(jobs_per_device=1)
    modes["first"] = "hang"
    sup.submit(spec_for("first"))
    assert sup.submit(spec_for("second")).status == "queued"
    job = sup.cancel("second")
    assert job.status == "cancelled" and job.pid is None and job.finished_at
    assert sup.cancel("first", grace_seconds=10).status == "cancelled"
    assert sup.poll() == []  # the cancelled one is not started


# -- re-attach --------------------------------------------------------------------------------


def test_new_supervisor_reattaches_and_cancels(supervisors, spec_for, modes, store, paths) -> None:
    first = supervisors()
    modes["kept"] = "hang"
    pid = first.submit(spec_for("kept")).pid
    wait_for(first, "kept", stepping)

    second = supervisors(over=Store(paths.db))
    assert second.reattach() == []
    job = wait_for(second, "kept", lambda j: (j.progress.step or 0) >= 2)
    assert job.status == "running" and job.pid == pid
    cancelled = second.cancel("kept", grace_seconds=10)
    assert cancelled.status == "cancelled", cancelled.error
    second.store.close()


def test_dead_pid_without_result_is_interrupted(sup: Supervisor, spec_for, store, paths) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for task_id, pid in (("gone", dead.pid), ("reused", os.getpid())):
        job = sup.create(spec_for(task_id))
        (job.output_dir / "events.jsonl").write_text(
            '{"kind": "started", "time": 1.0, "total_steps": 9}\n'
            '{"kind": "step", "time": 2.0, "step": 3, "loss": 1.5}\n'
        )
        with store.transaction() as db:
            db.execute(
                "UPDATE jobs SET status = 'running', pid = ?, started_at = 0.5 WHERE id = ?",
                (pid, task_id),
            )
    changed = Supervisor(store, paths, runner_command=sup.runner_command).reattach()
    assert sorted((j.id, j.status) for j in changed) == [
        ("gone", "interrupted"),
        ("reused", "interrupted"),  # our own pid is alive but is not this job's runner
    ]
    job = sup.get("gone")
    assert job.error == "the training process ended without a result (killed?)"
    assert (job.progress.step, job.progress.total_steps, job.progress.last_loss) == (3, 9, 1.5)


def test_dead_pid_with_finished_event_is_completed(sup: Supervisor, spec_for, store) -> None:
    job = sup.create(spec_for("done-away"))
    (job.output_dir / "events.jsonl").write_text(
        '{"kind": "started", "time": 1.0, "total_steps": 2}\n'
        '{"kind": "stopped", "time": 1.5, "step": 1}\n'
        '{"kind": "started", "time": 2.0, "total_steps": 2, "resumed_from": 1}\n'
        '{"kind": "finished", "time": 3.0, "output_dir": "x", "metrics": {}}\n'
    )
    with store.transaction() as db:
        db.execute(
            "UPDATE jobs SET status = 'running', pid = 999999999, started_at = 1.8 WHERE id = ?",
            ("done-away",),
        )
    assert [j.status for j in sup.reattach()] == ["completed"]


def test_child_survives_its_parent(supervisors, spec_for, store, paths) -> None:
    sup = supervisors()
    spec = spec_for("orphan")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sage_tui.core.store import Store\n"
        "from sage_tui.core.training.spec import JobSpec\n"
        "from sage_tui.core.training.supervisor import Supervisor\n"
        "from sage_tui.paths import Paths\n"
        "paths = Paths(Path(sys.argv[1]))\n"
        "def command(job_dir, resume):\n"
        f"    return [sys.executable, {str(FAKE_RUNNER)!r}, str(job_dir), '--mode', 'hang']\n"
        "sup = Supervisor(Store(paths.db), paths, runner_command=command)\n"
        "print(sup.submit(JobSpec.from_file(Path(sys.argv[2]))).pid)\n"
    )
    spec_file = paths.home / "orphan-spec.json"
    spec_file.write_text(spec.to_json())
    out = subprocess.run(
        [sys.executable, "-c", code, str(paths.home), str(spec_file)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO,
        check=True,
    )
    pid = int(out.stdout)
    assert sup.reattach() == []
    job = wait_for(sup, "orphan", stepping)
    assert job.pid == pid and pid_alive(pid)
    assert sup.cancel("orphan", grace_seconds=10).status == "cancelled"
    assert sup.last_checkpoint("orphan") is not None


# -- refusals ---------------------------------------------------------------------------------


def test_bad_requests_are_refused_by_name(sup: Supervisor, spec_for, modes, paths) -> None:
    modes["busy"] = "hang"
    sup.submit(spec_for("busy"))
    with pytest.raises(JobError, match="busy"):
        sup.create(spec_for("busy"))
    with pytest.raises(JobError, match="cancel it before deleting"):
        sup.delete("busy")
    with pytest.raises(JobError, match="already running"):
        sup.start("busy")
    with pytest.raises(JobError, match="already running"):
        sup.start("busy", resume=True)
    for call in (sup.get, sup.start, sup.cancel, sup.delete, sup.events):
        with pytest.raises(JobError, match="no fine-tuning job named ghost"):
            call("ghost")
    (paths.job_dir("leftover")).mkdir()
    with pytest.raises(JobError, match="already exists"):
        sup.create(spec_for("leftover"))
    assert sup.cancel("busy", grace_seconds=10).status == "cancelled"
    sup.delete("busy")
    assert not paths.job_dir("busy").exists()
    with pytest.raises(JobError, match="busy"):
        sup.get("busy")


def test_completed_job_cannot_be_started_again(sup: Supervisor, spec_for) -> None:
    sup.submit(spec_for("once"))
    wait_for(sup, "once", ended)
    with pytest.raises(JobError, match="once is completed"):
        sup.start("once")
    with pytest.raises(JobError, match="only a cancelled"):
        sup.start("once", resume=True)


def test_bad_spec_leaves_nothing_behind(sup: Supervisor, spec_for, paths) -> None:
    from sage_tui.core.training.spec import SpecError

    with pytest.raises(SpecError):
        sup.create(spec_for("odd").with_changes(lora_r=3))
    assert not paths.job_dir("odd").exists() and sup.list() == []


def test_poll_in_a_worker_while_cancelling(supervisors, spec_for, modes) -> None:
    """The TUI polls from a worker while another thread cancels; both settle one outcome."""
    sup = supervisors(jobs_per_device=1)
    modes["w1"] = "hang"
    sup.submit(spec_for("w1"))
    sup.submit(spec_for("w2"))
    changes: list[tuple[str, str]] = []
    done = threading.Event()

    def worker() -> None:
        while not done.is_set():
            changes.extend((j.id, j.status) for j in sup.poll())
            time.sleep(0.02)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        wait_for(sup, "w1", stepping)
        assert sup.cancel("w1", grace_seconds=10).status == "cancelled"
        assert wait_for(sup, "w2", ended).status == "completed"
    finally:
        done.set()
        thread.join()
    assert changes.count(("w1", "cancelled")) <= 1
    assert sup.get("w1").status == "cancelled"


def test_runner_that_cannot_start_fails_the_job(sup: Supervisor, spec_for, tmp_path) -> None:
    sup.runner_command = lambda job_dir, resume: [str(tmp_path / "no-such-program")]
    with pytest.raises(JobError, match="cannot start the training process"):
        sup.submit(spec_for("nope"))
    job = sup.get("nope")
    assert job.status == "failed" and "cannot start" in job.error
    assert sup.poll() == []
