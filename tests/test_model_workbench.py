"""Managing models (the Models screen's keys and `sage-tui models`): details, delete and its
refusals, rename, import of adapters, export with its refusals (fast: no engine, no merge; the
real merge and the export loaded by transformers and vLLM are in test_merge_export)."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from sage_tui.cli import main
from sage_tui.core.arena import Vote, VoteStore
from sage_tui.core.conversations import ConversationStore
from sage_tui.core.models import export as export_module
from sage_tui.core.performance import reply_performance
from sage_tui.core.training.backend import adapter_name, register_job_adapter
from sage_tui.core.training.jobs import Job, JobProgress, JobStatus
from sage_tui.core.training.spec import JobSpec
from sage_tui.errors import ModelError
from sage_tui.services import Services
from sage_tui.studio import Studio
from sage_tui.studio.model_card import detail_lines
from tests.conftest import BUILTIN
from tests.support.fake_engine import adapter_folder
from tests.support.supervising import FixedJobs


def make_job(services: Services, task_id: str, status: str, base: str = BUILTIN) -> Job:
    folder = services.settings.paths.job_dir(task_id)
    adapter_folder(folder)
    spec = JobSpec(task_id, base, "", "data/facts.jsonl", lora_r=8, lora_alpha=16)
    return Job(
        id=task_id,
        base_model=base,
        dataset=spec.dataset,
        status=JobStatus(status),
        spec=spec,
        output_dir=folder,
        pid=None,
        error=None,
        created_at=0.0,
        started_at=0.0,
        finished_at=1.0,
        progress=JobProgress(step=40, total_steps=40, last_loss=0.41, eval_loss=0.52),
    )


@pytest.fixture
def studio(provisioned_services: Services) -> Studio:
    return Studio(provisioned_services)


def with_jobs(studio: Studio, *jobs: Job) -> None:
    studio.services.supervisor = FixedJobs(jobs)


def test_details_of_the_built_in_model_and_a_jobs_adapter(studio: Studio) -> None:
    base = studio.models.details(BUILTIN)
    assert base.active and base.record.source == "builtin"
    assert 130e6 < base.facts.parameters < 140e6  # SmolLM2-135M, from the safetensors header
    assert base.facts.dtype == "bfloat16" and base.facts.context_length == 8192
    assert base.facts.size_bytes > 250 * 1024**2

    job = make_job(studio.services, "ft-made", "completed")
    with_jobs(studio, job)
    adapter = register_job_adapter(studio.services.registry, job)
    details = studio.models.details(adapter.name)
    assert details.job is job and details.facts.rank == 8 and details.facts.alpha == 16
    assert studio.models.details(BUILTIN).adapters == (adapter.name,)


def test_delete_refuses_the_active_model_a_model_a_job_uses_and_a_base_with_adapters(
    studio: Studio,
) -> None:
    registry = studio.services.registry
    with pytest.raises(ModelError, match="is the chat's model"):
        studio.models.delete(BUILTIN)
    twin = Path(registry.get(BUILTIN).path).parent / "twin"
    shutil.copytree(Path(registry.get(BUILTIN).path).resolve(), twin)
    registry.import_model(str(twin), name="twin")
    with_jobs(studio, make_job(studio.services, "ft-busy", "running", base="twin"))
    with pytest.raises(ModelError, match="job ft-busy is running on twin"):
        studio.models.delete("twin")

    registry.register_adapter("twin-lora", adapter_folder(twin.parent / "lora"), "twin", "local")
    with_jobs(studio)
    with pytest.raises(ModelError, match=r"has adapters \(twin-lora\): delete or merge"):
        studio.models.delete("twin")
    assert {m.name for m in registry.list()} == {BUILTIN, "twin", "twin-lora"}  # nothing lost


def test_delete_removes_files_only_where_the_studio_made_them(studio: Studio) -> None:
    registry = studio.services.registry
    job = make_job(studio.services, "ft-keep", "completed")
    with_jobs(studio, job)
    adapter = register_job_adapter(registry, job).name
    assert "stay in job ft-keep's folder" in studio.models.delete(adapter)
    assert job.folder.has_adapter()  # the job's result is the job's

    local = adapter_folder(studio.services.settings.home / "mine")
    registry.register_adapter("mine", local, BUILTIN, "local")
    assert f"its files stay at {local}" in studio.models.delete("mine")
    assert (local / "adapter_config.json").is_file()

    merged = studio.services.settings.paths.model_dir("merged-one")
    shutil.copytree(Path(registry.get(BUILTIN).path).resolve(), merged)
    registry.register_merged(
        "merged-one", merged, base=registry.get(BUILTIN), adapter=registry.get(BUILTIN)
    )
    assert "is deleted" in studio.models.delete("merged-one")
    assert not merged.exists()


def test_rename_keeps_adapters_jobs_votes_and_the_active_model_attached(studio: Studio) -> None:
    registry = studio.services.registry
    twin = studio.services.settings.home / "twin"
    shutil.copytree(Path(registry.get(BUILTIN).path).resolve(), twin)
    registry.import_model(str(twin), name="twin")
    registry.set_active("twin")
    job = make_job(studio.services, "ft-twin", "completed", base="twin")
    with_jobs(studio, job)
    adapter = register_job_adapter(registry, job).name
    VoteStore(studio.services.store).add(Vote("twin", "hi", "twin", adapter, "x", "y", "a"))

    studio.models.rename("twin", "qwen-ish")
    assert registry.get(adapter).base_model == "qwen-ish"
    assert registry.active_name == "qwen-ish"
    active = json.loads(studio.services.settings.paths.active_model_file.read_text())
    assert active["name"] == "qwen-ish"
    assert {s.model for s in studio.arena.stats("qwen-ish")} == {"qwen-ish", adapter}

    studio.models.rename(adapter, "twin-facts")
    # Using the job again finds its adapter under the name the user gave it.
    job = make_job(studio.services, "ft-twin", "completed", base="qwen-ish")
    with_jobs(studio, job)
    assert register_job_adapter(registry, job).name == "twin-facts"
    assert adapter_name("ft-twin") not in {m.name for m in registry.list()}

    with pytest.raises(ModelError, match="built-in model and keeps its name"):
        studio.models.rename(BUILTIN, "smol")
    with pytest.raises(ModelError, match="registered already"):
        studio.models.rename("twin-facts", BUILTIN)


def test_import_an_adapter_by_the_base_it_names_or_refuse_it(studio: Studio, tmp_path) -> None:
    base_path = studio.services.registry.get(BUILTIN).path
    named = adapter_folder(tmp_path / "lora-a")
    config = json.loads((named / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_path
    (named / "adapter_config.json").write_text(json.dumps(config))
    record = studio.models.import_model(str(named))
    assert (record.kind, record.base_model, record.name) == ("adapter", BUILTIN, "lora-a")

    stranger = adapter_folder(tmp_path / "lora-b")
    config["base_model_name_or_path"] = "meta-llama/Llama-3.1-8B"
    (stranger / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"adapter of meta-llama/Llama-3\.1-8B, which is not"):
        studio.models.import_model(str(stranger))
    assert studio.models.import_model(str(stranger), base=BUILTIN).base_model == BUILTIN

    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelError, match="no weights"):
        studio.models.import_model(str(empty))


def test_export_refuses_a_folder_in_use_and_a_full_disk_and_leaves_nothing(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="a folder that is not empty"):
        studio.models.export(BUILTIN, taken, progress=lambda _: None)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    class Small:
        free = 10 * 1024**2

    monkeypatch.setattr(export_module.shutil, "disk_usage", lambda _: Small)
    with pytest.raises(ModelError, match=r"needs 2\d\d MiB, 10 MiB is free"):
        studio.models.export(BUILTIN, tmp_path / "out", progress=lambda _: None)
    monkeypatch.undo()

    def full(source, target):
        Path(target).write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    # A disk that fills up during the copy (its free figure said there was room).
    monkeypatch.setattr(export_module.shutil, "copyfile", full)
    with pytest.raises(ModelError, match=r"filled up after .* nothing was exported"):
        studio.models.export(BUILTIN, tmp_path / "out", progress=lambda _: None)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_export_of_a_jobs_adapter_carries_its_files_and_a_card(studio: Studio, tmp_path) -> None:
    job = make_job(studio.services, "ft-card", "completed")
    (job.output_dir / "train.log").write_text("log")
    with_jobs(studio, job)
    adapter = register_job_adapter(studio.services.registry, job).name
    out = studio.models.export(adapter, tmp_path / "card", progress=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    card = (out / "README.md").read_text()
    for fact in (f"| base model | {BUILTIN} |", "| dataset | data/facts.jsonl |", "0.41"):
        assert fact in card
    assert "--lora-modules" in card


def test_the_cli_lists_shows_and_renames(capsys, studio: Studio, tmp_path: Path) -> None:
    home = str(studio.services.settings.home)
    registry = studio.services.registry
    registry.register_adapter("lora-x", adapter_folder(tmp_path / "x"), BUILTIN, "local")
    assert main(["--home", home, "models", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["name"], r["active"]) for r in rows] == [(BUILTIN, True), ("lora-x", False)]
    assert main(["--home", home, "models", "show", BUILTIN]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "context length   8192" in out and "lora-x" in out
    assert main(["--home", home, "models", "rename", "lora-x", "lora-y"]) == 0
    assert "lora-x is now lora-y" in capsys.readouterr().out
    assert main(["--home", home, "models", "remove", BUILTIN]) == 2
    assert "is the chat's model" in capsys.readouterr().err


def test_reply_speed_is_averaged_over_the_recent_replies_that_have_figures(studio: Studio) -> None:
    chats = ConversationStore(studio.services.store)
    chat = chats.create("speed", model=BUILTIN)
    figures = [
        {"time_to_first_token": 0.2, "tokens_per_second": 40.0, "seconds": 2.0},
        {"time_to_first_token": 0.4, "tokens_per_second": 20.0, "seconds": 4.0},
        {"time_to_first_token": 0.1, "tokens_per_second": 99.0, "cut_off": True},
        {"error": "engine stopped"},
        {"time_to_first_token": 0.3, "tokens_per_second": 0.0, "seconds": 0.3},  # one token
    ]
    for stats in figures:
        chats.add_message(chat, "user", "hi", BUILTIN)
        chats.add_message(chat, "assistant", "hello", BUILTIN, stats)
    speed = reply_performance(studio.services.store, BUILTIN)
    assert speed.replies == 2 and speed.tokens_per_second == pytest.approx(30.0)
    assert speed.time_to_first_token == pytest.approx(0.3) and speed.seconds == pytest.approx(3.0)
    assert reply_performance(studio.services.store, "nobody") is None
    lines = dict(detail_lines(studio.models.details(BUILTIN)))
    assert lines["speed"] == "2 recent replies: first token 0.30 s · 30.0 tokens/s · 3.0 s a reply"


def test_merge_refuses_a_base_model_and_an_adapter_whose_base_is_gone(studio: Studio) -> None:
    registry = studio.services.registry
    twin = studio.services.settings.home / "twin"
    shutil.copytree(Path(registry.get(BUILTIN).path).resolve(), twin)
    registry.import_model(str(twin), name="twin")
    registry.register_adapter("twin-lora", adapter_folder(twin.parent / "lora"), "twin", "local")
    with pytest.raises(ModelError, match="twin is a base model: only an adapter"):
        studio.models.merge("twin", progress=lambda _: None)
    shutil.rmtree(twin)
    with pytest.raises(ModelError, match=r"the base model twin's folder .* is gone"):
        studio.models.merge("twin-lora", progress=lambda _: None)
    assert not studio.services.settings.paths.model_dir("twin-lora-merged").exists()
    assert {m.name for m in registry.list()} == {BUILTIN, "twin", "twin-lora"}


def test_a_base_models_details_estimate_serving_and_training_it(studio: Studio) -> None:
    serving, training = studio.models.details(BUILTIN).memory
    assert serving.startswith("engine ~0.") and "for 8,192 tokens" in serving
    assert training.startswith("training ~") and "RAM free" in training  # no GPU here
    job = make_job(studio.services, "ft-m", "completed")
    with_jobs(studio, job)
    assert (
        studio.models.details(register_job_adapter(studio.services.registry, job).name).memory == ()
    )
