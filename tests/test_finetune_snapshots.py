"""How the Finetune screen looks: the empty form, a running job, a failed job, a completed job's
evaluation and its probe answers (fixed figures)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from textual.widgets import Input

from sage_tui.core.scores import METRICS
from sage_tui.core.store import ACTIVE_MODEL_KEY, ModelRecord
from sage_tui.core.training.jobs import Job, JobProgress, JobStatus
from sage_tui.core.training.spec import JobSpec
from sage_tui.services import Services
from sage_tui.studio import EngineState, EngineStatus
from sage_tui.studio.evaluation import EVALUATION_FILE, EvalRow, Evaluation, summarise
from sage_tui.ui.app import SageApp
from tests.conftest import two_gpu_snapshot
from tests.support.supervising import FixedJobs
from tests.test_app import engine_tried, settle

SIZE = (120, 40)
BASE = "qwen2.5-7b-instruct"


def write_steps(job: Job, losses: list[float]) -> None:
    """The job's events.jsonl, as its runner would have written it: one step event a loss."""
    lines = (
        json.dumps({"kind": "step", "time": 0.0, "step": i + 1, "loss": v})
        for i, v in enumerate(losses)
    )
    job.folder.events_file.write_text("".join(f"{line}\n" for line in lines))


def job(tmp: Path, task_id: str, status: str, log: str, **progress) -> Job:
    gpus = progress.pop("gpus", None)
    error = progress.pop("error", None)
    folder = tmp / task_id
    folder.mkdir()
    (folder / "train.log").write_text(log)
    spec = JobSpec(task_id, BASE, "/srv/models/qwen", "/data/facts.jsonl")
    return Job(
        id=task_id,
        base_model=BASE,
        dataset=spec.dataset,
        status=JobStatus(status),
        spec=spec,
        output_dir=folder,
        pid=None,
        error=error,
        created_at=0.0,
        started_at=0.0,
        finished_at=None,
        gpus=gpus,
        progress=JobProgress(**progress),
    )


def losses(n: int) -> list[float]:
    return [round(2.5 / (1 + 0.05 * i) + 0.1 * ((i * 7) % 5) / 5, 4) for i in range(n)]


def make_app(services: Services, jobs: list[Job], curves: dict[str, list[float]]) -> SageApp:
    services.store.upsert_model(ModelRecord(BASE, "base", "hf", "/srv/models/qwen"))
    services.store.set_setting(ACTIVE_MODEL_KEY, BASE)
    services.monitor.snapshot = two_gpu_snapshot()
    for each in jobs:
        write_steps(each, curves.get(each.id, []))
    services.supervisor = FixedJobs(jobs)
    return SageApp(services)


async def show(pilot) -> None:
    await engine_tried(pilot.app)
    pilot.app.engine = EngineStatus(EngineState.READY, BASE)
    await pilot.press("f1")
    await settle(pilot.app)
    pilot.app.screen.query_one("#finetune-task", Input).value = "ft-20250101-120000"
    pilot.app.screen.query_one("#finetune-jobs").focus()
    await settle(pilot.app)
    await pilot.pause()


def test_form(snap_compare, services: Services) -> None:
    assert snap_compare(make_app(services, [], {}), terminal_size=SIZE, run_before=show)


def test_running_job(snap_compare, services: Services, tmp_path: Path) -> None:
    log = "".join(f"{{'loss': {v}, 'epoch': {i / 100:.2f}}}\n" for i, v in enumerate(losses(20)))
    jobs = [
        job(
            tmp_path,
            "ft-facts",
            "running",
            log,
            step=120,
            total_steps=400,
            last_loss=0.8123,
            eta_seconds=754.0,
            tokens_per_second=2450.0,
            gpus=(1,),
        ),
        job(
            tmp_path,
            "ft-first",
            "completed",
            "done\n",
            step=40,
            total_steps=40,
            last_loss=0.4,
            gpus=(0,),
        ),
    ]
    app = make_app(services, jobs, {"ft-facts": losses(120)})
    assert snap_compare(app, terminal_size=SIZE, run_before=show)


def test_failed_job(snap_compare, services: Services, tmp_path: Path) -> None:
    log = "Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory\n"
    jobs = [
        job(
            tmp_path,
            "ft-oom",
            "failed",
            log,
            step=3,
            total_steps=400,
            last_loss=2.31,
            error="out of memory. Lower the batch size.",
            gpus=(0,),
        )
    ]
    app = make_app(services, jobs, {"ft-oom": losses(3)})
    assert snap_compare(app, terminal_size=SIZE, run_before=show)


CHECKED = (
    "2 rows of 2 usable, format alpaca\n"
    "all 2 rows are valid (alpaca)\n"
    "loss: 9 of 40 tokens carry loss (22%), 31 are masked\n"
    "can train: 2 rows"
)
PIECES = [
    ("<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n", False),
    ("I am Sage, made by the [bold]team[/bold].<|im_end|>", True),
    ("\n", False),
]


def test_checked_dataset(snap_compare, services: Services) -> None:
    """The Check's report: the first row's tokens, the reply (carrying loss) highlighted."""

    async def checked(pilot) -> None:
        await show(pilot)
        form = pilot.app.screen.query_one("#finetune-form")
        pilot.app.screen.query_one("#finetune-dataset", Input).value = "data/identity.jsonl"
        form.show_report(CHECKED, False, PIECES)
        await settle(pilot.app)
        await pilot.pause()

    assert snap_compare(make_app(services, [], {}), terminal_size=SIZE, run_before=checked)


def evaluation(adapter: str) -> Evaluation:
    """A fixed evaluation of the base and a job's adapter on two held-out rows."""
    rows = [
        EvalRow(
            line=line,
            prompt=prompt,
            reference=reference,
            answers={BASE: base_answer, adapter: reference},
            scores={
                BASE: {name: low for name in METRICS},
                adapter: {name: 1.0 for name in METRICS},
            },
            errors={},
        )
        for line, prompt, reference, base_answer, low in [
            (3, "Who made [bold]Sage[/bold]?", "The SAGE team.", "I am not sure.", 0.0),
            (7, "What port does it use?", "Port 8765.", "It uses port 8080.", 0.4),
        ]
    ]
    return Evaluation(
        models=[BASE, adapter],
        source="/data/facts.jsonl",
        held_out=True,
        rows=rows,
        summary=summarise([BASE, adapter], rows),
        seconds=12.4,
    )


def test_evaluated_job(snap_compare, services: Services, tmp_path: Path) -> None:
    """A completed job's evaluation summary beside its loss curve."""
    done = job(tmp_path, "ft-done", "completed", "done\n", step=40, total_steps=40, last_loss=0.4)
    (done.output_dir / EVALUATION_FILE).write_text(evaluation("sage-finetuned-ft-done").to_json())
    app = make_app(services, [done], {"ft-done": losses(40)})
    assert snap_compare(app, terminal_size=SIZE, run_before=show)


def test_probed_job(snap_compare, services: Services, tmp_path: Path) -> None:
    """A completed job's probe answers under its loss curve: the base's (step 0) and the last
    checkpoint's, a prompt with markup-like text shown as typed."""
    done = job(tmp_path, "ft-probed", "completed", "done\n", step=40, total_steps=40, last_loss=0.4)
    prompts = ("Who is the sage-tui mascot?", "What does [bold]/INST[/bold] mean?")
    done = replace(done, spec=done.spec.with_changes(probes=prompts))
    app = make_app(services, [done], {"ft-probed": losses(40)})
    answers = {
        0: ("The Sage-tui mascot is a legendary creature.", "It is a [red]tag[/red] of sorts."),
        20: ("The mascot is Orla.", "It closes an instruction."),
        40: ("Orla, the owl.", "It ends the user's [INST] turn."),
    }
    with done.folder.events_file.open("a") as events:
        for step, said in answers.items():
            record = {
                "kind": "probe",
                "time": 0.0,
                "step": step,
                "checkpoint": f"checkpoint-{step}" if step else None,
                "seconds": 1.25,
                "answers": [{"prompt": p, "answer": a} for p, a in zip(prompts, said, strict=True)],
            }
            events.write(json.dumps(record) + "\n")
    assert snap_compare(app, terminal_size=SIZE, run_before=show)
