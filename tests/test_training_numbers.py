"""Numbers from training can be anything: a NaN or infinite loss stops the job with the reason,
is read back from events.jsonl as it was written, and is shown as such on the Finetune screen."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from textual.widgets import Input

from sage_tui.core.training.divergence import divergence
from sage_tui.core.training.events import EventWriter, read_events
from sage_tui.core.training.probes import Prober
from sage_tui.core.training.runner import make_reporter
from sage_tui.ui.widgets.loss_chart import LossChartPanel, describe_losses
from tests.support.waiting import until
from tests.test_finetune_screen import DATASET, MODES, make_app  # noqa: F401

NAN, INF = float("nan"), float("inf")


# -- the runner's check -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logs", "reason"),
    [
        ({"loss": 1.5, "grad_norm": 3.0}, None),
        ({"loss": NAN}, "loss became NaN at step 37"),
        ({"loss": INF, "grad_norm": 1.0}, "loss became inf at step 37"),
        ({"loss": -INF}, "loss became -inf at step 37"),
        ({"loss": 1.5, "grad_norm": NAN}, "the gradient norm became NaN at step 37"),
        ({"eval_loss": NAN}, None),  # only training figures stop a job
        ({"loss": None, "grad_norm": "n/a"}, None),
    ],
)
def test_divergence(logs: dict, reason: str | None) -> None:
    found = divergence(logs, 37, 0.1)
    if reason is None:
        assert found is None
    else:
        assert found == (reason, "try a lower learning rate (now 0.1)")


def reporter_at(tmp_path: Path, step: int):
    from transformers import TrainerControl

    events = EventWriter(tmp_path)
    reporter = make_reporter(events, tmp_path, None, Prober((), 48, None, events))
    args = SimpleNamespace(learning_rate=0.05)
    state = SimpleNamespace(global_step=step, max_steps=100, epoch=0.4)
    return events, reporter, args, state, TrainerControl()


def test_a_nan_loss_stops_the_job_without_saving_it(tmp_path: Path) -> None:
    events, reporter, args, state, control = reporter_at(tmp_path, 37)
    control.should_save = control.should_evaluate = True  # a save step, as the trainer set it
    reporter.on_log(args, state, control, logs={"loss": NAN, "learning_rate": 0.05})
    assert control.should_training_stop and not control.should_save
    assert not control.should_evaluate
    reporter.on_step_end(args, state, control)
    assert control.should_training_stop and not control.should_save
    reporter.on_epoch_end(args, state, control)
    assert not control.should_save
    events.close()

    written, _ = read_events(tmp_path)
    assert [e.kind for e in written] == ["step", "failed"]
    assert math.isnan(written[0].data["loss"])
    assert written[1].data["reason"] == "loss became NaN at step 37"
    assert written[1].data["suggestion"] == "try a lower learning rate (now 0.05)"


def test_a_finite_loss_trains_on(tmp_path: Path) -> None:
    events, reporter, args, state, control = reporter_at(tmp_path, 5)
    control.should_save = True
    reporter.on_log(args, state, control, logs={"loss": 2.5, "grad_norm": 1e30})
    reporter.on_step_end(args, state, control)
    events.close()
    assert not control.should_training_stop and control.should_save
    assert reporter.diverged is None
    assert [e.kind for e in read_events(tmp_path)[0]] == ["step"]


def test_events_keep_nan_and_infinity(tmp_path: Path) -> None:
    events = EventWriter(tmp_path)
    events.write("step", step=1, loss=NAN, learning_rate=INF, eta_seconds=-INF)
    events.close()
    assert "NaN" in (tmp_path / "events.jsonl").read_text()
    (step,), _ = read_events(tmp_path)
    assert math.isnan(step.data["loss"])
    assert step.data["learning_rate"] == INF and step.data["eta_seconds"] == -INF


def test_the_caption_names_what_is_not_a_number() -> None:
    assert describe_losses([2.0, 1.0, NAN]) == (
        "loss over 3 steps: first 2.0000  last nan  min 1.0000  (1 not finite)"
    )
    assert describe_losses([NAN, 1.0, INF]).endswith("last inf  min 1.0000  (2 not finite)")
    assert "min -" in describe_losses([NAN])


# -- the Finetune screen ------------------------------------------------------------------


async def test_a_job_whose_loss_became_nan_shows_failed_with_the_reason(
    make_app,  # noqa: F811  (the Finetune screen tests' fixture)
) -> None:
    MODES["ft-nan"] = "nan"  # NaN at step 3 (after a checkpoint at step 2)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f1")
        await until(lambda: app.screen.bases and app.resources is not None)
        await pilot.pause()
        screen = app.screen
        screen.query_one("#finetune-dataset", Input).value = DATASET
        screen.query_one("#finetune-task", Input).value = "ft-nan"
        await pilot.press("ctrl+s")

        await until(lambda: app.jobs and app.jobs[0].status == "failed")
        job = app.jobs[0]
        assert job.error == "loss became NaN at step 3 try a lower learning rate (now 0.0002)"
        assert math.isnan(job.progress.last_loss)
        summary = str(screen.query_one("#finetune-job-summary").render())
        assert "loss became NaN at step 3" in summary and "lower learning rate" in summary
        chart = screen.query_one(LossChartPanel)
        await until(lambda: "last nan" in chart.caption)
        assert chart.caption.startswith("loss over 3 steps: first 2.0000  last nan")
        assert chart.losses == [2.0, 1.0]  # the NaN is named, not drawn
        table = screen.query_one("#finetune-jobs")
        await until(lambda: str(table.get_row("ft-nan")[4]) == "nan")
        # The checkpoint before the NaN is what a resume goes on from.
        checkpoint = app.services.supervisor.last_checkpoint("ft-nan")
        assert checkpoint is not None and checkpoint.name == "checkpoint-2"

        table.focus()
        MODES["ft-nan"] = "ok"  # the resumed run is fine
        await pilot.press("r")
        await until(lambda: app.jobs[0].status == "completed")
        assert app.jobs[0].progress.step == 2 + 4
        await until(lambda: "last 0.3333" in chart.caption)
        await pilot.pause()
    assert app.return_code in (None, 0)  # nothing crashed
