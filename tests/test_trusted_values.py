"""Values read back from the home are checked before they are used: job ids and model names
before a path is built or removed from them, spec.json's expert settings (`extra`) against the
allow-list, and `trust_remote_code` against the base model's registry record.

The database and spec.json are tampered with for real (sqlite3, plain writes); the studio, the
supervisor with the fake runner and the real runner process read them back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sage_tui.cli import main as cli_main
from sage_tui.core.models.registry import remote_code_allowed
from sage_tui.core.store import ModelRecord
from sage_tui.core.training.events import read_events
from sage_tui.core.training.expert_settings import EXPERT_SETTINGS
from sage_tui.core.training.job_folder import JobFolder
from sage_tui.core.training.job_rows import JobError
from sage_tui.core.training.spec import JobSpec, SpecError
from sage_tui.core.training.trainer_config import sft_arguments
from sage_tui.errors import UnsafeNameError
from sage_tui.paths import Paths
from sage_tui.services import Services
from sage_tui.studio import Studio
from sage_tui.studio.jobs import JobRequest
from tests.conftest import BUILTIN
from tests.support.fake_engine import adapter_folder
from tests.support.supervising import ended, wait_for

REPO = Path(__file__).resolve().parent.parent
FACTS = REPO / "sample_data" / "sage_tui_facts.jsonl"

UNSAFE = ["../victim", "a/b", ".", "..", "", "x\x00y", "ok\n", "x" * 129]
"""Ids that must never become a path: an absolute one is added per test (in its tmp_path)."""


@pytest.fixture(autouse=True)
def _umask_restored():
    """`sage-tui`'s main sets the process umask; the other tests keep theirs."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


# -- ids and names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*UNSAFE, "/etc", 7, None])
def test_no_folder_is_built_from_an_id_or_name_that_is_not_one(name, tmp_path: Path) -> None:
    paths = Paths(tmp_path / "home")
    with pytest.raises(UnsafeNameError, match="must be letters, digits") as job:
        paths.job_dir(name)
    with pytest.raises(UnsafeNameError, match="must be letters, digits") as model:
        paths.model_dir(name)
    for error in (job, model):
        assert "\n" not in str(error.value) and "no path is built from it" in str(error.value)
    assert paths.job_dir("ft-1.a_b") == paths.finetune_outputs / "ft-1.a_b"


def tamper(db: Path, sql: str, params: tuple = ()) -> None:
    """Change the database behind the studio's back, as another program could."""
    with sqlite3.connect(db) as connection:
        connection.execute(sql, params)


@pytest.fixture
def finished(sup, spec_for, paths: Paths):
    """A finished job, `done`, and a folder a tampered id could point at, `victim`."""
    sup.submit(spec_for("done"))
    assert wait_for(sup, "done", ended).status == "completed"
    victim = paths.finetune_outputs.parent / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    return paths.job_dir("done"), victim


@pytest.mark.parametrize("bad_id", [*UNSAFE, "absolute"])
def test_a_tampered_job_id_is_listed_broken_and_no_path_is_built_from_it(
    bad_id: str, sup, paths: Paths, finished, tmp_path: Path
) -> None:
    folder, victim = finished
    (tmp_path / "victim").mkdir()
    bad_id = str(tmp_path / "victim") if bad_id == "absolute" else bad_id
    tamper(paths.db, "UPDATE jobs SET id = ? WHERE id = 'done'", (bad_id,))

    (job,) = sup.list()  # no exception: the job is shown broken, with the reason
    assert job.shown_status == "broken" and "its id, read back from the database" in job.broken
    assert "must be letters, digits" in job.broken
    for act in (sup.start, sup.cancel, sup.events, lambda i: sup.start(i, resume=True)):
        with pytest.raises(JobError, match="cannot be used"):
            act(bad_id)
    with pytest.raises(JobError, match=r"record of job .* is deleted; no folder was"):
        sup.delete(bad_id)
    assert sup.list() == []
    assert (victim / "keep.txt").read_text() == "mine"
    assert (tmp_path / "victim").is_dir() and paths.finetune_outputs.is_dir()
    assert (folder / "spec.json").is_file()  # the folder the id once named is left alone too


def test_a_queued_job_with_a_tampered_id_fails_to_start_and_others_run(
    sup, paths: Paths, spec_for, tmp_path: Path
) -> None:
    sup.create(spec_for("good"))
    tamper(
        paths.db,
        "INSERT INTO jobs (id, base_model, dataset, status, spec, output_dir, created_at)"
        " SELECT '../escaped', base_model, dataset, 'queued', spec, ?, 0 FROM jobs",
        (str(tmp_path / "elsewhere"),),
    )
    sup.poll()
    bad = sup.get("../escaped")
    assert bad.status == "failed" and bad.error.startswith("cannot start: task id '../escaped'")
    assert wait_for(sup, "good", ended).status == "completed"
    assert not (paths.finetune_outputs.parent / "escaped").exists()
    assert not (tmp_path / "elsewhere").exists()


def test_a_tampered_folder_in_the_database_is_not_followed(
    sup, paths: Paths, finished, tmp_path: Path
) -> None:
    folder, victim = finished
    tamper(paths.db, "UPDATE jobs SET output_dir = ? WHERE id = 'done'", (str(victim),))
    job = sup.get("done")
    assert job.output_dir == folder and job.broken is None  # built from the id, as always
    sup.delete("done")
    assert not folder.exists()
    assert (victim / "keep.txt").read_text() == "mine"


# -- spec.json read back by the runner --------------------------------------------------------


def run_runner(job_dir: Path) -> str:
    """Start the real runner on `job_dir` as the supervisor would; the reason it failed."""
    done = subprocess.run(
        [sys.executable, "-m", "sage_tui.core.training.runner", str(job_dir)],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        cwd=job_dir,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    failed = read_events(job_dir)[0][-1]
    assert failed.kind == "failed"
    return failed.data["reason"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"task_id": "../x"}, "task id '../x' must be letters"),
        ({"extra": {"output_dir": "/tmp/x"}}, "'output_dir' not allowed in extra; allowed: weight"),
        ({"extra": {"report_to": ["wandb"]}}, "'report_to' not allowed in extra"),
        ({"extra": {"weight_decay": "lots"}}, "weight_decay='lots' must be a number from 0 to 1"),
        ({"trust_remote_code": True}, "asks to run the base model's own code, but 'tiny' is"),
    ],
)
def test_the_runner_refuses_a_tampered_spec(change, reason, paths: Paths, tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    job_dir = paths.job_dir("tampered")
    job_dir.mkdir()
    spec = JobSpec("tampered", "tiny", str(base), str(FACTS)).check()
    JobFolder(job_dir).spec_file.write_text(json.dumps({**json.loads(spec.to_json()), **change}))
    assert reason in run_runner(job_dir)


# -- expert settings (`extra`) ---------------------------------------------------------------


def request(**settings) -> JobRequest:
    return JobRequest(base=BUILTIN, dataset=FACTS, task_id="expert", settings=settings)


def test_extra_is_limited_to_the_allowed_settings_when_submitted(
    provisioned_services: Services,
) -> None:
    jobs = Studio(provisioned_services).jobs
    allowed = {"weight_decay": 0.01, "max_grad_norm": 0.5, "gradient_checkpointing": True}
    assert jobs.prepare(request(extra=allowed)).spec.extra == allowed
    for extra, said in [
        ({"output_dir": "/tmp"}, "expert setting 'output_dir' not allowed in extra; allowed: "),
        ({"push_to_hub": True, "hub_token": "x"}, "settings 'hub_token', 'push_to_hub' not"),
        ({"trust_remote_code": True}, "'trust_remote_code' not allowed in extra"),
        ({"model_init_kwargs": {"trust_remote_code": True}}, "'model_init_kwargs' not allowed"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm=nan must be a number from 0 to 1000"),
        ({"optim": "galore_adamw"}, "optim='galore_adamw' must be one of adamw_torch,"),
        ({"bf16": "yes"}, "bf16='yes' must be true or false"),
        ([1, 2], "expert settings (extra) must be an object of names and values, not list"),
    ]:
        with pytest.raises(SpecError) as info:
            jobs.prepare(request(extra=extra))
        assert said in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SpecError, match="trust_remote_code is not a job setting"):
        jobs.prepare(request(trust_remote_code=True))


def test_expert_settings_override_the_studios_defaults_but_not_its_own_choices(
    tmp_path: Path,
) -> None:
    spec = JobSpec(
        "x", "m", str(tmp_path), str(FACTS), extra={"gradient_checkpointing": True, "bf16": True}
    )
    arguments = sft_arguments(spec, JobFolder(tmp_path / "x"), cuda=False, evaluating=False)
    assert arguments["gradient_checkpointing"] is True and arguments["bf16"] is True
    assert arguments["output_dir"] == str(tmp_path / "x" / "checkpoints")
    assert arguments["trust_remote_code"] is False and arguments["report_to"] == []


@pytest.mark.slow
def test_every_allowed_expert_setting_is_an_sft_config_argument(tmp_path: Path) -> None:
    from trl import SFTConfig

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    assert sorted(set(EXPERT_SETTINGS) - names) == []
    spec = JobSpec("x", "m", str(tmp_path), str(FACTS), extra={"weight_decay": 0.1})
    config = SFTConfig(**sft_arguments(spec, JobFolder(tmp_path), cuda=False, evaluating=True))
    assert config.weight_decay == 0.1 and config.trust_remote_code is False


# -- trust_remote_code ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "config", "allowed"),
    [
        ("base", {}, False),
        ("base", {"trust_remote_code": True}, True),
        ("base", {"trust_remote_code": "true"}, False),  # read back from a tampered database
        ("base", {"trust_remote_code": 1}, False),
        ("base", ["trust_remote_code"], False),
        ("adapter", {"trust_remote_code": True}, False),  # an adapter follows its base
    ],
)
def test_remote_code_is_allowed_only_by_a_base_models_record(kind, config, allowed) -> None:
    record = ModelRecord("m", kind, "local", "/m", config=config)  # type: ignore[arg-type]
    assert remote_code_allowed(record) is allowed


async def test_remote_code_runs_only_for_a_model_registered_to_run_it(
    provisioned_services: Services, engines, tmp_path: Path, builtin_model_dir: Path, capsys
) -> None:
    services = provisioned_services
    home = str(services.settings.home)
    twin = tmp_path / "twin"
    twin.symlink_to(builtin_model_dir, target_is_directory=True)
    assert cli_main(["--home", home, "models", "import", str(twin), "--trust-remote-code"]) == 0
    services.registry.register_adapter("twin-tuned", adapter_folder(tmp_path / "lora"), "twin")
    studio = Studio(services)
    seen = {}
    for name in (BUILTIN, "twin", "twin-tuned"):
        await studio.engine.switch(name)
        seen[name] = engines.current.config.trust_remote_code
    await studio.shutdown()
    assert seen == {BUILTIN: False, "twin": True, "twin-tuned": True}
    jobs = studio.jobs
    assert jobs.prepare(JobRequest(base="twin", dataset=FACTS)).spec.trust_remote_code is True
    assert jobs.prepare(JobRequest(base=BUILTIN, dataset=FACTS)).spec.trust_remote_code is False


def test_the_cli_refuses_an_unknown_expert_setting_in_one_line_creating_nothing(
    provisioned_services: Services, capsys
) -> None:
    home = provisioned_services.settings.home
    argv = ["--home", str(home), "finetune", "--base", BUILTIN, "--data", str(FACTS)]
    assert cli_main([*argv, "--extra", "weight_decay=0.01", "--extra", 'output_dir="/x"']) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "expert setting 'output_dir' not allowed in extra; allowed: weight_decay" in err
    assert cli_main([*argv, "--extra", "weight_decay"]) == 2
    assert "--extra 'weight_decay' must be NAME=VALUE" in capsys.readouterr().err
    assert list(provisioned_services.settings.paths.finetune_outputs.iterdir()) == []


def test_the_loss_mask_is_not_an_expert_setting() -> None:
    from sage_tui.core.training.expert_settings import expert_problems

    (problem,) = expert_problems({"assistant_only_loss": True})
    assert "train on prompts too (--train-on-prompts)" in problem
