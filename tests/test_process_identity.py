"""A job's process is recognised by its exact command line and start time, and every child the
studio starts imports only what it should, whatever folder the user started it from."""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sage_tui.core.store import Store
from sage_tui.core.training import processes
from sage_tui.core.training.processes import (
    default_runner_command,
    pid_runs_job,
    spawn_runner,
    start_keeper,
)
from sage_tui.core.training.spec import JobSpec
from sage_tui.core.training.supervisor import Supervisor
from sage_tui.paths import Paths

SLEEP = "import time; time.sleep(60)"
RUNNER = "sage_tui.core.training.runner"
HOSTILE = "raise SystemExit('hijacked')\n"
TIMEOUT = 30.0


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "home").ensure()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts sleeping processes with a chosen argv; all are killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        started.append(proc)
        deadline = time.monotonic() + TIMEOUT
        # Past exec: until then /proc shows the parent's command line.
        while _cmdline(proc.pid) != argv and time.monotonic() < deadline:
            time.sleep(0.01)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode() for part in raw.split(b"\0")[:-1]]


@pytest.fixture
def runner_lookalikes(tmp_path: Path) -> dict[str, str]:
    """An environment whose `sage_tui.core.training.runner` and `torch.distributed.run` only
    sleep, so a process can carry the real runner's exact command lines without training."""
    root = tmp_path / "lookalikes"
    for package in ("sage_tui", "sage_tui/core", "sage_tui/core/training", "torch/distributed"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    (root / "torch" / "__init__.py").write_text("")
    (root / "sage_tui/core/training/runner.py").write_text(SLEEP + "\n")
    (root / "torch/distributed/run.py").write_text(SLEEP + "\n")
    return {**os.environ, "PYTHONPATH": str(root)}


def runner_like(job_dir: Path) -> list[str]:
    """A sleeping process whose argv names the runner module and `job_dir` as the runner's."""
    return [sys.executable, "-c", SLEEP, "-m", RUNNER, str(job_dir)]


def commands(job_dir: Path) -> list[list[str]]:
    return [default_runner_command(job_dir, resume) for resume in (False, True)]


def running_job(store: Store, paths: Paths, task_id: str, pid: int, started_at: float) -> None:
    """Record a job as running under `pid` since `started_at`, as an earlier studio left it."""
    data = paths.home / "data.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    sup = Supervisor(store, paths, devices=lambda: [])
    sup.create(
        JobSpec(task_id=task_id, base_model="tiny", base_path=str(paths.home), dataset=str(data))
    )
    with store.transaction() as db:
        db.execute(
            "UPDATE jobs SET status = 'running', pid = ?, started_at = ? WHERE id = ?",
            (pid, started_at, task_id),
        )


@pytest.fixture
def store(paths: Paths) -> Iterator[Store]:
    opened = Store(paths.db)
    yield opened
    opened.close()


# -- (a) a longer job name is another job ---------------------------------------------------


def test_ft10s_runner_is_not_ft1s(spawn, paths: Paths) -> None:
    ft1, ft10 = paths.job_dir("ft-1"), paths.job_dir("ft-10")
    proc = spawn(runner_like(ft10))
    since = time.time() - 1
    assert pid_runs_job(proc.pid, ft10, since, commands(ft10))  # the control
    assert not pid_runs_job(proc.pid, ft1, since, commands(ft1))


def test_reattach_does_not_follow_ft10s_runner_for_ft1(spawn, store, paths: Paths) -> None:
    since = time.time() - 1
    proc = spawn(runner_like(paths.job_dir("ft-10")))
    running_job(store, paths, "ft-1", proc.pid, since)
    changed = Supervisor(store, paths, devices=lambda: []).reattach()
    assert [(job.id, job.status) for job in changed] == [("ft-1", "interrupted")]
    assert proc.poll() is None  # not ours to stop


# -- (b) a process that merely names a file in the job folder --------------------------------


def test_a_tail_of_the_log_is_not_the_runner(spawn, paths: Paths) -> None:
    ft1 = paths.job_dir("ft-1")
    tail = spawn([sys.executable, "-c", SLEEP, "-f", str(ft1 / "train.log")])
    named = spawn([sys.executable, "-c", SLEEP, "-f", str(ft1)])  # the folder, not the runner
    since = time.time() - 1
    assert not pid_runs_job(tail.pid, ft1, since, commands(ft1))
    assert not pid_runs_job(named.pid, ft1, since, commands(ft1))


def test_reattach_does_not_follow_a_tail_of_the_log(spawn, store, paths: Paths) -> None:
    since = time.time() - 1
    tail = spawn([sys.executable, "-c", SLEEP, "-f", str(paths.job_dir("ft-1") / "train.log")])
    running_job(store, paths, "ft-1", tail.pid, since)
    changed = Supervisor(store, paths, devices=lambda: []).reattach()
    assert [(job.id, job.status) for job in changed] == [("ft-1", "interrupted")]
    assert tail.poll() is None


# -- (c) pid reuse: a process older than the job ---------------------------------------------


def test_a_process_older_than_the_job_is_not_its_runner(spawn, store, paths: Paths) -> None:
    ft1 = paths.job_dir("ft-1")
    proc = spawn(runner_like(ft1))
    later = time.time() + 60  # the job started after this process did: its pid was reused
    assert not pid_runs_job(proc.pid, ft1, later, commands(ft1))


def test_reattach_does_not_follow_a_reused_pid(spawn, store, paths: Paths) -> None:
    proc = spawn(runner_like(paths.job_dir("ft-1")))
    running_job(store, paths, "ft-1", proc.pid, time.time() + 60)
    changed = Supervisor(store, paths, devices=lambda: []).reattach()
    assert [(job.id, job.status) for job in changed] == [("ft-1", "interrupted")]


# -- (d) what the real runner looks like is accepted -----------------------------------------


def test_the_real_runner_and_its_ddp_form_are_accepted(
    spawn, runner_lookalikes, store, paths: Paths
) -> None:
    ft1 = paths.job_dir("ft-1")
    since = time.time() - 1
    plain = spawn(default_runner_command(ft1, False), runner_lookalikes)
    resumed = spawn(default_runner_command(ft1, True), runner_lookalikes)
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    ddp = spawn([*ddp, "-m", RUNNER, str(ft1), "--resume"], runner_lookalikes)
    for proc in (plain, resumed, ddp):
        assert proc.poll() is None
        assert pid_runs_job(proc.pid, ft1, since, commands(ft1))


def test_reattach_keeps_following_a_ddp_runner(
    spawn, runner_lookalikes, store, paths: Paths
) -> None:
    since = time.time() - 1
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    ddp = spawn([*ddp, "-m", RUNNER, str(paths.job_dir("ft-1"))], runner_lookalikes)
    running_job(store, paths, "ft-1", ddp.pid, since)
    assert Supervisor(store, paths, devices=lambda: []).reattach() == []  # still running
    assert Supervisor(store, paths, devices=lambda: []).get("ft-1").status == "running"


def test_a_custom_runner_is_known_by_its_program(spawn, tmp_path: Path, paths: Paths) -> None:
    ft1 = paths.job_dir("ft-1")
    script = tmp_path / "my_runner.py"
    script.write_text(SLEEP + "\n")
    mine = spawn([sys.executable, str(script), str(ft1), "--mode", "hang"])
    other = spawn([sys.executable, str(tmp_path / "other.py"), str(ft1)])  # exits at once
    other.wait()
    expected = [[sys.executable, str(script), str(ft1)]]
    since = time.time() - 1
    assert pid_runs_job(mine.pid, ft1, since, expected)
    assert not pid_runs_job(other.pid, ft1, since, expected)
    stranger = spawn([sys.executable, "-c", SLEEP, str(tmp_path / "x.py"), str(ft1)])
    assert not pid_runs_job(stranger.pid, ft1, since, expected)


def test_a_zombie_or_missing_pid_is_not_running(paths: Paths) -> None:
    ft1 = paths.job_dir("ft-1")
    zombie = subprocess.Popen([sys.executable, "-c", "pass", "-m", RUNNER, str(ft1)])
    deadline = time.monotonic() + TIMEOUT
    while Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert not pid_runs_job(zombie.pid, ft1, None, commands(ft1))
    finally:
        zombie.wait()
    assert not pid_runs_job(None, ft1) and not pid_runs_job(0, ft1)


# -- (e) children start clean, whatever folder the user is in --------------------------------


@pytest.fixture
def hostile_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's current folder holds a json.py and an argparse.py that must never load."""
    folder = tmp_path / "users-folder"
    folder.mkdir()
    for name in ("json.py", "argparse.py"):
        (folder / name).write_text(HOSTILE)
    monkeypatch.chdir(folder)
    return folder


def test_the_keeper_ignores_modules_in_the_users_folder(
    hostile_cwd: Path, paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def record(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(processes.subprocess, "Popen", record)
    assert start_keeper(paths, 1)
    assert len(started) == 1
    code = started[0].wait(timeout=TIMEOUT)
    log = paths.queue_log.read_text()
    assert "hijacked" not in log
    assert code == 0, log


def test_a_runner_starts_with_a_safe_import_path(
    hostile_cwd: Path, paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_dir = paths.job_dir("ft-1")
    job_dir.mkdir(parents=True)
    seen = job_dir / "sys_path.txt"
    code = "import sys; open(sys.argv[1], 'w').write(repr(sys.path))"
    proc = spawn_runner(
        [sys.executable, "-c", code, str(seen)], job_dir, job_dir / "train.log", "starting", ()
    )
    assert proc.wait(timeout=TIMEOUT) == 0, (job_dir / "train.log").read_text()
    path = ast.literal_eval(seen.read_text())
    assert str(hostile_cwd) not in path
    if sys.version_info >= (3, 11):  # safe-path mode; 3.10 puts its cwd, the job folder, first
        assert "" not in path and str(job_dir) not in path and os.curdir not in path


def test_a_runner_killed_by_signal_is_not_left_running(spawn, paths: Paths) -> None:
    ft1 = paths.job_dir("ft-1")
    proc = spawn(runner_like(ft1))
    since = time.time() - 1
    assert pid_runs_job(proc.pid, ft1, since, commands(ft1))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not pid_runs_job(proc.pid, ft1, since, commands(ft1))
