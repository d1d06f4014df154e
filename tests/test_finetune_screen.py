"""The Finetune screen driven through Pilot, with the fake runner standing in for training."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from textual.widgets import Input

from sage_tui.core.training.supervisor import Supervisor
from sage_tui.services import Services
from sage_tui.ui.app import SageApp
from sage_tui.ui.messages import JobEnded
from sage_tui.ui.modals.use_backend import TITLE, UseBackendModal
from sage_tui.ui.widgets.job_form import JobForm
from sage_tui.ui.widgets.loss_chart import LossChartPanel
from sage_tui.ui.widgets.token_preview import LEGEND, DatasetReport, report_text
from tests.conftest import BUILTIN, REPO
from tests.support.fake_engine import adapter_folder
from tests.support.waiting import until

FAKE_RUNNER = REPO / "tests" / "support" / "fake_runner.py"
DATASET = "sample_data/sage_tui_facts.jsonl"


MODES: dict[str, str] = {}
"""The fake runner's mode per task id (default "ok")."""


def fake_command(job_dir: Path, resume: bool) -> list[str]:
    mode = MODES.get(job_dir.name, "ok")
    return [sys.executable, str(FAKE_RUNNER), str(job_dir), "--mode", mode] + (
        ["--resume"] if resume else []
    )


@pytest.fixture
def make_app(provisioned_services: Services, monkeypatch: pytest.MonkeyPatch):
    """A studio with the fake runner, a fast job poll and the scripted engine."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(SageApp, "JOB_POLL_SECONDS", 0.2)
    MODES.clear()
    supervisor = Supervisor(
        provisioned_services.store,
        provisioned_services.settings.paths,
        runner_command=fake_command,
        devices=lambda: [],
    )
    provisioned_services.supervisor = supervisor

    def make() -> SageApp:
        app = SageApp(provisioned_services)
        app.bells = 0

        def bell() -> None:
            app.bells += 1

        app.bell = bell
        return app

    yield make
    for job in supervisor.list():
        if job.active:
            supervisor.cancel(job.id, grace_seconds=2, term_seconds=2)


def fill(app: SageApp, **values: str) -> None:
    for widget_id, value in values.items():
        app.screen.query_one(f"#finetune-{widget_id}", Input).value = value


async def open_finetune(app: SageApp, pilot) -> None:
    await pilot.press("f1")
    await until(lambda: app.screen.bases and app.resources is not None)
    await pilot.pause()


async def test_start_follow_and_finish_a_job(make_app) -> None:
    app = make_app()
    seen: list = []
    async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
        await open_finetune(app, pilot)
        screen = app.screen
        assert screen.query_one("#finetune-preset").value == "cpu"  # no GPU
        fill(app, dataset=DATASET, task="ft-pilot")
        await pilot.press("ctrl+s")

        await until(lambda: any(job.id == "ft-pilot" for job in app.jobs))
        await until(lambda: app.jobs[0].status == "completed")
        job = app.jobs[0]
        assert job.progress.step == job.progress.total_steps == 4 and job.progress.fraction == 1.0
        await until(lambda: len(screen.query_one(LossChartPanel).losses) == 4)
        assert screen.query_one(LossChartPanel).losses == [2.0, 1.0, 0.6667, 0.5]
        # The table follows app.jobs through a message: wait for it rather than race it.
        table = screen.query_one("#finetune-jobs")
        await until(lambda: table.get_row("ft-pilot")[1].plain == "completed")
        assert "completed" in str(screen.query_one("#finetune-job-summary").render())

        await until(lambda: any(isinstance(m, JobEnded) for m in seen))
        ended = [m.job for m in seen if isinstance(m, JobEnded)]
        assert [(j.id, j.status) for j in ended] == [("ft-pilot", "completed")]
        assert app.bells == 1
        # The next job gets a fresh name unless one is typed (once the submit has returned:
        # a fast job can end before it does).
        await until(lambda: screen.query_one("#finetune-task", Input).value == "")


async def test_bad_input_creates_no_job(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=DATASET, task="ft-bad", rank="12")
        await pilot.press("ctrl+s")
        await pilot.pause()
        notes = [n.message for n in app._notifications]
        assert any("LoRA rank 12" in note for note in notes), notes

        fill(app, rank="16", dataset="no/such/data.jsonl")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert any("does not exist" in n.message for n in app._notifications)

        app.screen.query_one("#finetune-check").press()
        report = app.screen.query_one("#finetune-dataset-report")
        await until(lambda: report.has_class("-error"))
        assert "does not exist" in str(report.render())
        await asyncio.sleep(0.5)
        assert app.services.supervisor.list() == []
        assert not app.services.settings.paths.job_dir("ft-bad").exists()


async def test_use_a_finished_job_as_backend(make_app, engines, tmp_path: Path) -> None:
    adapter = adapter_folder(tmp_path / "adapter")
    app = make_app()
    seen: list = []
    async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=DATASET, task="ft-use")
        await pilot.press("ctrl+s")
        await until(lambda: app.jobs and app.jobs[0].status == "completed")
        for file in adapter.iterdir():
            if file.is_file():
                shutil.copy(file, app.jobs[0].output_dir / file.name)

        app.screen.query_one("#finetune-jobs").focus()
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, UseBackendModal))
        assert str(app.screen.query_one("#use-backend-title").render()) == TITLE
        await pilot.press("enter")
        await until(lambda: app.active_model == "sage-finetuned-ft-use" and app.engine.ready)
        assert app.services.registry.active_name == "sage-finetuned-ft-use"
        assert engines.script.started == [BUILTIN]  # an adapter of the loaded base: no reload


async def test_escape_declines_and_unfinished_jobs_are_refused(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=DATASET, task="ft-no")
        await pilot.press("ctrl+s")
        await until(lambda: app.jobs and app.jobs[0].status == "completed")
        app.screen.query_one("#finetune-jobs").focus()
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, UseBackendModal))
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, UseBackendModal)
        assert app.services.registry.active_name != "sage-finetuned-ft-no"

        await pilot.press("d")
        await until(lambda: app.jobs == [])
        assert not app.services.settings.paths.job_dir("ft-no").exists()


async def test_cancel_then_resume_from_the_screen(make_app) -> None:
    MODES["ft-stop"] = "hang"
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=DATASET, task="ft-stop")
        await pilot.press("ctrl+s")
        await until(
            lambda: app.jobs and app.jobs[0].status == "running" and app.jobs[0].progress.step
        )
        table = app.screen.query_one("#finetune-jobs")
        await until(lambda: "ft-stop" in table.rows and str(table.get_row("ft-stop")[2]) == "CPU")
        table.focus()
        await pilot.press("d")  # refused while it runs, and the user is told why
        await until(lambda: any("cancel it before" in n.message for n in app._notifications))
        await pilot.press("c")
        await until(lambda: app.jobs[0].status == "cancelled")
        stopped_at = app.jobs[0].progress.step
        checkpoint = app.services.supervisor.last_checkpoint("ft-stop")
        assert checkpoint is not None and checkpoint.name == f"checkpoint-{stopped_at}"

        MODES["ft-stop"] = "ok"
        await pilot.press("r")
        await until(lambda: app.jobs[0].status == "completed")
        assert app.jobs[0].progress.step == stopped_at + 4  # went on from the checkpoint
        argv = (app.jobs[0].output_dir / "argv.jsonl").read_text().splitlines()
        assert len(argv) == 2 and "--resume" in argv[1]
        notes = [n.message for n in app._notifications]
        assert "Job ft-stop running." in notes  # the resume


async def test_gpu_field_is_checked_before_a_job_exists(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=DATASET, task="ft-gpu", gpus="first")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert any("expected GPU numbers" in n.message for n in app._notifications)
        fill(app, gpus="0")  # this host has none
        await pilot.press("ctrl+s")
        await until(lambda: any("no usable GPU" in n.message for n in app._notifications))
        assert app.services.supervisor.list() == []
        assert not app.services.settings.paths.job_dir("ft-gpu").exists()


async def test_check_shows_a_rendered_row_and_asks_for_placeholders(
    make_app, tmp_path: Path
) -> None:
    data = tmp_path / "identity.jsonl"
    rows = [
        '{"instruction": "Who are you?", "output": "I am {{name}}, made by {{author}}."}',
        '{"instruction": "Hi", "output": "Hello, I am {{name}}."}',
    ]
    data.write_text("\n".join(rows) + "\n")
    app = make_app()
    async with app.run_test(size=(120, 50)) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=str(data), task="ft-identity")
        app.screen.query_one("#finetune-check").press()
        report = app.screen.query_one("#finetune-dataset-report")
        await until(lambda: "first row's tokens" in str(report.render()))
        text = str(report.render())
        assert "<|im_start|>user\nWho are you?<|im_end|>" in text  # SmolLM2's chat template
        assert "unfilled placeholders {{author}}, {{name}}" in text
        assert app.screen.query_one("#finetune-fills").display
        fill(app, **{"fill-name": "Sage"})
        await pilot.press("ctrl+s")
        await until(lambda: app.services.supervisor.list())
        assert app.services.supervisor.get("ft-identity").spec.placeholders == {"name": "Sage"}


def trained_text(report: DatasetReport) -> str:
    """The report's text shown in the "carries loss" highlight, piece by piece."""
    rendered = report.render()
    style = report.get_component_rich_style("dataset-report--trained")
    return "|".join(
        rendered.plain[span.start : span.end] for span in rendered.spans if span.style == style
    )


async def checked(app: SageApp, pilot, seen: list, **request) -> DatasetReport:
    """Wait for a Check with these request fields to be asked for and shown."""
    report = app.screen.query_one(DatasetReport)

    def asked() -> bool:
        return any(
            isinstance(m, JobForm.CheckRequested)
            and all(getattr(m.request, k) == v for k, v in request.items())
            for m in seen
        )

    await until(asked)
    await until(lambda: report.pieces and "checking" not in report.text)
    return report


async def test_the_check_highlights_the_tokens_that_carry_loss(make_app, tmp_path: Path) -> None:
    data = tmp_path / "hi.jsonl"
    data.write_text('{"instruction": "[bold]Who are you?", "output": "I am Sage."}\n')
    app = make_app()
    seen: list = []
    async with app.run_test(size=(120, 50), message_hook=seen.append) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=str(data))
        app.screen.query_one("#finetune-check").press()
        report = await checked(app, pilot, seen, train_on_prompts=False)
        assert report.pieces[1] == ("I am Sage.<|im_end|>", True)
        text = report.render().plain
        assert "[bold]Who are you?" in text  # the row is data: no markup read
        assert LEGEND in text
        # The legend's own word and the reply: nothing of the prompt carries loss.
        assert trained_text(report) == "highlighted|I am Sage.<|im_end|>"

        seen.clear()
        await pilot.click("#finetune-train-on-prompts")  # re-checks by itself
        report = await checked(app, pilot, seen, train_on_prompts=True)
        assert "<|im_start|>user\n[bold]Who are you?" in trained_text(report)


async def test_columns_and_masking_switches_reach_the_job(make_app, tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "Who are you?", "answer": "I am Sage.</s>"}\n' * 4)
    app = make_app()
    seen: list = []
    async with app.run_test(size=(120, 50), message_hook=seen.append) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=str(data), task="ft-columns", columns="instruction=nope")
        app.screen.query_one("#finetune-check").press()
        report = app.screen.query_one(DatasetReport)
        await until(lambda: report.has_class("-error") and "nope" in report.text)

        fill(app, columns="instruction=question,output=answer")
        app.screen.query_one("#finetune-columns", Input).focus()
        await pilot.press("enter")  # a changed mapping checks again
        columns = {"instruction": "question", "output": "answer"}
        await checked(app, pilot, seen, columns=columns)
        assert not report.has_class("-error"), report.text
        await pilot.click("#finetune-strip-special")
        await checked(app, pilot, seen, columns=columns, strip_special_tokens=True)

        await pilot.press("ctrl+s")
        await until(lambda: app.services.supervisor.list())
        spec = app.services.supervisor.get("ft-columns").spec
        assert spec.columns == columns
        assert spec.strip_special_tokens is True and spec.train_on_prompts is False


def test_report_text_marks_the_trained_pieces_and_keeps_text_as_data() -> None:
    pieces = [("[bold]ask\x1b[2J", False), ("reply[/]", True), ("\n", False)]
    text = report_text("verdict", pieces, trained="reverse")
    assert text.plain == f"verdict\nfirst row's tokens:\n{LEGEND}\n[bold]ask\u241b[2Jreply[/]\n"
    marked = [text.plain[s.start : s.end] for s in text.spans if s.style == "reverse"]
    assert marked == ["highlighted", "reply[/]"]
    assert report_text("verdict", []).plain == "verdict"  # no tokens: no legend
    long = report_text("", [("ab", True)] * 10, limit=6)
    assert long.plain.endswith("ababab ... (7 more tokens)")
