"""One job, whoever asks: the CLI and the Finetune screen give the same spec.json for the same
inputs, Check says what Start will do with bad rows, and a job reads the same everywhere.

Each test here failed on the code before the application layer: the presets gave a different
LoRA alpha from the CLI than from the form, and Check read a file Start then refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Checkbox, Input, Select, Static

from sage_tui.cli import main
from sage_tui.core.training.supervisor import Supervisor
from sage_tui.services import Services
from sage_tui.studio.formatting import job_summary
from sage_tui.studio.jobs import JobRequest
from sage_tui.ui.app import SageApp
from tests.conftest import BUILTIN, REPO
from tests.support.waiting import until
from tests.test_finetune_screen import fake_command, fill, open_finetune

FACTS = REPO / "sample_data" / "sage_tui_facts.jsonl"


@pytest.fixture
def app_services(provisioned_services: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    monkeypatch.setattr(SageApp, "JOB_POLL_SECONDS", 0.2)
    provisioned_services.supervisor = Supervisor(
        provisioned_services.store,
        provisioned_services.settings.paths,
        runner_command=fake_command,
        devices=lambda: [],
    )
    return provisioned_services


def spec_of(services: Services, task_id: str) -> dict:
    spec = json.loads((services.settings.paths.job_dir(task_id) / "spec.json").read_text())
    spec.pop("task_id")
    return spec


def cli(capsys, services: Services, *argv: str) -> str:
    home = str(services.settings.home)
    code = main(["--home", home, "finetune", "--base", BUILTIN, "--data", str(FACTS), *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.strip()


async def form(app: SageApp, pilot, task_id: str, preset: str, **fields: str) -> None:
    await open_finetune(app, pilot)
    app.screen.query_one("#finetune-preset", Select).value = preset
    await pilot.pause()
    fill(app, dataset=str(FACTS), task=task_id, **fields)
    await pilot.press("ctrl+s")
    await until(lambda: any(job.id == task_id for job in app.jobs))


@pytest.mark.parametrize(
    ("preset", "cli_flags", "form_fields"),
    [
        ("large-gpu", [], {}),
        ("small-gpu", ["--rank", "64"], {"rank": "64"}),
        ("cpu", ["--lr", "0.001", "--max-steps", "30"], {"lr": "0.001", "max-steps": "30"}),
    ],
    ids=["preset", "rank-without-alpha", "overrides"],
)
async def test_cli_and_screen_write_the_same_spec(
    capsys, monkeypatch, app_services: Services, preset, cli_flags, form_fields
) -> None:
    # The CLI only creates its job (no training process): the spec is what is compared.
    monkeypatch.setattr(Supervisor, "submit", Supervisor.create)
    assert cli(capsys, app_services, "--name", "from-cli", "--preset", preset, *cli_flags)
    monkeypatch.undo()
    app = SageApp(app_services)
    async with app.run_test(size=(120, 40)) as pilot:
        await form(app, pilot, "from-form", preset, **form_fields)
    from_cli, from_form = spec_of(app_services, "from-cli"), spec_of(app_services, "from-form")
    assert from_cli == from_form
    assert from_cli["lora_alpha"] == 2 * from_cli["lora_r"]


def test_a_rank_without_an_alpha_gets_twice_the_rank(provisioned_services: Services) -> None:
    from sage_tui.studio import Studio

    jobs = Studio(provisioned_services).jobs

    def spec(**settings):
        return jobs.prepare(
            JobRequest(base=BUILTIN, dataset=FACTS, preset="cpu", settings=settings)
        ).spec

    assert (spec().lora_r, spec().lora_alpha) == (16, 32)
    assert spec(lora_r=64).lora_alpha == 128
    assert spec(lora_r=64, lora_alpha=16).lora_alpha == 16


def bad_rows(tmp_path: Path) -> Path:
    data = tmp_path / "mixed.jsonl"
    rows = [
        {"instruction": "Who made sage-tui?", "output": "The SAGE team."},
        {"instruction": "What is Orla?", "output": ""},
        {"instruction": "What does sage-tui do?", "output": "Fine-tunes and chats."},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return data


async def test_check_says_what_start_will_do_with_bad_rows(
    app_services: Services, tmp_path: Path
) -> None:
    data = bad_rows(tmp_path)
    app = SageApp(app_services)
    async with app.run_test(size=(120, 50)) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=str(data), task="ft-mixed")
        report = app.screen.query_one("#finetune-dataset-report")
        app.screen.query_one("#finetune-check").press()
        await until(lambda: "Start refuses" in str(report.render()))
        assert "1 of 3 rows are invalid" in str(report.render())
        assert report.has_class("-error")
        await pilot.press("ctrl+s")  # and Start does refuse it, with the line
        await until(lambda: any("line 2" in n.message for n in app._notifications))
        assert app_services.supervisor.list() == []

        app.screen.query_one("#finetune-skip-invalid", Checkbox).value = True  # checks again
        await until(lambda: "will be skipped: training on 2" in str(report.render()))
        assert not report.has_class("-error")
        await pilot.press("ctrl+s")
        await until(lambda: any(job.id == "ft-mixed" for job in app.jobs))
    assert spec_of(app_services, "ft-mixed")["skip_invalid"] is True


def test_the_cli_refuses_and_skips_bad_rows_the_same_way(
    capsys, monkeypatch, provisioned_services: Services, tmp_path: Path
) -> None:
    monkeypatch.setattr(Supervisor, "submit", Supervisor.create)
    data = bad_rows(tmp_path)
    home = str(provisioned_services.settings.home)
    start = ["--home", home, "finetune", "--base", BUILTIN, "--data", str(data), "--name", "m"]
    assert main(start) == 2
    err = capsys.readouterr().err
    assert "1 of 3 rows are invalid (line 2:" in err and "skip invalid rows" in err
    assert main([*start, "--skip-invalid"]) == 0
    assert "1 invalid rows of 3 will be skipped: training on 2" in capsys.readouterr().err
    assert spec_of(provisioned_services, "m")["skip_invalid"] is True


async def test_a_job_reads_the_same_in_the_cli_and_on_screen(
    capsys, app_services: Services
) -> None:
    app = SageApp(app_services)
    async with app.run_test(size=(120, 40)) as pilot:
        await form(app, pilot, "ft-same", "cpu")
        await until(lambda: app.jobs[0].status == "completed")
        app.screen.query_one("#finetune-jobs").focus()
        await pilot.pause()
        job = app.jobs[0]
        summary = app.screen.query_one("#finetune-job-summary", Static)
        await until(lambda: str(summary.render()) == job_summary(job, app.resources))
    assert main(["--home", str(app_services.settings.home), "jobs", "show", "ft-same"]) == 0
    assert capsys.readouterr().out.startswith(job_summary(app_services.supervisor.get("ft-same")))


async def test_form_fields_follow_the_preset(app_services: Services) -> None:
    app = SageApp(app_services)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_finetune(app, pilot)
        app.screen.query_one("#finetune-preset", Select).value = "large-gpu"
        await pilot.pause()
        assert app.screen.query_one("#finetune-rank", Input).value == "32"
        assert app.screen.query_one("#finetune-alpha", Input).value == "64"
