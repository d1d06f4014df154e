"""The home is private: what the studio creates there is 0600 / 0700 whatever the umask, and a
home other users could write to (or that is not the user's) is refused before anything is made.

Real files through the real code paths: the studio's services (database, job folders, logs,
active_model.json), the fake runner (a child the supervisor starts), the real entry points
(`sage-tui`, the runner, the keeper) and, in one slow test, the real runner's checkpoint and
adapter.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sage_tui.cli import main as cli_main
from sage_tui.config import Settings
from sage_tui.core.training import keeper
from sage_tui.core.training.spec import JobSpec
from sage_tui.errors import HomeError
from sage_tui.paths import Paths
from sage_tui.services import open_services
from sage_tui.terminal import engine_output_to
from tests.conftest import BUILTIN, FakeMonitor, no_gpu_snapshot
from tests.support.fake_engine import FakeEngines
from tests.support.supervising import ended, fake_command, wait_for

REPO = Path(__file__).resolve().parent.parent
FACTS = REPO / "sample_data" / "sage_tui_facts.jsonl"


@pytest.fixture(autouse=True)
def _umask_restored() -> Iterator[None]:
    """`sage-tui`'s main sets the process umask; the other tests keep theirs."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The test runs under this umask (an entry point may change it); restored after."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def not_private(home: Path) -> list[str]:
    """Every file under `home` not 0600 and every folder not 0700 (links are not followed)."""
    wrong = []
    for path in [home, *home.rglob("*")]:
        status = path.lstat()
        if stat.S_ISLNK(status.st_mode):
            continue
        want = 0o700 if stat.S_ISDIR(status.st_mode) else 0o600
        if stat.S_IMODE(status.st_mode) != want:
            wrong.append(f"{path.relative_to(home.parent)} {stat.S_IMODE(status.st_mode):04o}")
    return wrong


def model_folder(path: Path) -> Path:
    """A folder the registry accepts as a base model (the fake engine never loads it)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(b"")
    (path / "tokenizer.json").write_text("{}")
    return path


def test_what_the_studio_and_its_runner_create_is_private(umask: int, tmp_path: Path) -> None:
    home = tmp_path / "home"
    services = open_services(
        Settings.load(home=home).with_changes(default_model=""),
        monitor=FakeMonitor(no_gpu_snapshot()),
        engine_factory=FakeEngines(),
        runner_command=fake_command({}),
        devices=lambda: [],
    )
    try:
        paths = services.settings.paths
        base = services.registry.import_model(str(model_folder(tmp_path / "tiny")))
        services.registry.set_active(base.name)  # active_model.json
        with engine_output_to(paths.engine_log):  # the engine's log, as the TUI opens it
            pass
        spec = JobSpec(
            task_id="private-job", base_model=base.name, base_path=base.path, dataset=str(FACTS)
        )
        services.supervisor.submit(spec)
        job = wait_for(services.supervisor, "private-job", ended)
        assert job.status == "completed", job.error
        # The child's own files: events, a checkpoint folder and its files, its argv record.
        assert (job.output_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file()
        assert (paths.db.parent / "sage-tui.db-wal").is_file()  # SQLite's, while it is open
        assert not_private(home) == []
    finally:
        services.store.close()


def test_the_entry_points_take_a_private_umask(umask: int, tmp_path: Path, capsys) -> None:
    home = tmp_path / "home"
    assert cli_main(["--home", str(home), "jobs", "list"]) == 0
    assert os.umask(umask) == 0o077  # cli.main set it, for the studio and its children
    assert keeper.main([str(home)]) == 0  # nothing queued: it exits at once
    assert os.umask(umask) == 0o077
    assert (home / "queue.lock").is_file()
    assert not_private(home) == []


def run_runner_with_umask_0(job_dir: Path, timeout: float) -> subprocess.CompletedProcess:
    """The real runner on `job_dir`, started with the most open umask there is."""
    return subprocess.run(
        [sys.executable, "-m", "sage_tui.core.training.runner", str(job_dir)],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        cwd=job_dir,
        capture_output=True,
        umask=0,
        timeout=timeout,
    )


def test_the_runner_takes_a_private_umask_before_it_writes(tmp_path: Path) -> None:
    home = Paths(tmp_path / "home").ensure()
    job_dir = home.job_dir("broken-spec")
    job_dir.mkdir(mode=0o700)
    (job_dir / "spec.json").write_text('{"task_id": "broken-spec"}')  # no base model: fails
    os.chmod(job_dir / "spec.json", 0o600)
    runner = run_runner_with_umask_0(job_dir, timeout=120)
    assert runner.returncode == 1, runner.stderr[-2000:]
    assert '"failed"' in (job_dir / "events.jsonl").read_text()
    assert not_private(home.home) == []


@pytest.mark.slow
def test_a_real_runners_checkpoint_and_adapter_are_private(
    tmp_path: Path, builtin_model_dir: Path
) -> None:
    home = Paths(tmp_path / "home").ensure()
    job_dir = home.job_dir("real-private")
    job_dir.mkdir(mode=0o700)
    spec = JobSpec(
        task_id="real-private",
        base_model=BUILTIN,
        base_path=str(builtin_model_dir),
        dataset=str(FACTS),
        max_steps=2,
        save_steps=1,
        batch_size=2,
        max_length=64,
    ).check()
    (job_dir / "spec.json").write_text(spec.to_json())
    os.chmod(job_dir / "spec.json", 0o600)
    runner = run_runner_with_umask_0(job_dir, timeout=300)
    assert runner.returncode == 0, runner.stdout[-3000:] + runner.stderr[-3000:]
    assert (job_dir / "adapter_model.safetensors").is_file()
    assert (job_dir / "checkpoints" / "checkpoint-2" / "optimizer.pt").is_file()
    assert not_private(home.home) == []


# -- a shared home is refused ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "mode", "said"),
    [
        ("", 0o777, "can be written by its group and other users (mode 0777)"),
        ("", 0o1777, "can be written by its group and other users (mode 1777)"),  # like /tmp
        ("", 0o720, "can be written by its group (mode 0720)"),
        ("models", 0o702, "can be written by other users (mode 0702)"),
        ("studio_finetune/outputs", 0o775, "can be written by its group"),
        ("sage-tui.db", 0o666, "can be written by its group and other users (mode 0666)"),
    ],
)
def test_a_home_others_can_write_to_is_refused_by_name_with_the_fix(
    tmp_path: Path, where: str, mode: int, said: str
) -> None:
    paths = Paths(tmp_path / "home").ensure()
    shared = paths.home / where if where else paths.home
    os.chmod(shared, mode)
    with pytest.raises(HomeError) as info:
        paths.ensure()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{shared} {said}")
    fix = "chmod 600" if shared.is_file() else "chmod 700"
    assert f"`{fix} {shared}`" in message and f"`chmod go-w {shared}`" in message
    os.chmod(shared, 0o600 if shared.is_file() else 0o700)  # the fix it names works
    paths.ensure()
    os.chmod(shared, 0o644 if shared.is_file() else 0o755)  # readable only: the user's choice
    paths.ensure()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_home_that_belongs_to_another_user_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    os.chown(home, 65534, 65534)
    with pytest.raises(HomeError, match=r"belongs to .*uid 65534.*not to you .*uid 0"):
        Paths(home).ensure()
    assert list(home.iterdir()) == []
    os.chown(home, 0, 0)  # root's own home, run as root: fine
    Paths(home).ensure()


@pytest.mark.parametrize("command", [["jobs", "list"], []], ids=["cli", "tui"])
def test_cli_and_tui_refuse_a_shared_home_with_exit_2_creating_nothing(
    tmp_path: Path, capsys, command: list[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o777)
    assert cli_main(["--home", str(home), *command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"`chmod 700 {home}`" in err
    assert list(home.iterdir()) == []
