"""Checkpoint probes on the Finetune screen, with the fake runner standing in for training:
the prompts typed in the form reach the job, and its rounds show under the loss chart."""

from __future__ import annotations

import json

from sage_tui.core.training.probes import ProbeAnswer, ProbeRound
from sage_tui.ui.app import SageApp
from sage_tui.ui.widgets.job_form import probe_prompts
from sage_tui.ui.widgets.probe_answers import ProbeAnswersPanel, probes_caption, probes_text
from tests.support.waiting import until
from tests.test_finetune_screen import DATASET, fill, make_app, open_finetune

__all__ = ["make_app"]  # the fixture, shared with the Finetune screen's tests

MARKUP = "what does [/INST] mean? [bold]really[/bold]"


async def test_probes_typed_in_the_form_are_answered_and_shown(make_app) -> None:
    app: SageApp = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_finetune(app, pilot)
        screen = app.screen
        panel = screen.query_one(ProbeAnswersPanel)
        assert not panel.display  # no job selected
        assert screen.query_one("#finetune-probes-hint").display  # this host has no GPU
        fill(app, dataset=DATASET, task="ft-probes", **{"probe-prompts": f"Who? | {MARKUP} | "})
        await pilot.press("ctrl+s")

        await until(lambda: any(j.id == "ft-probes" and j.status == "completed" for j in app.jobs))
        job = next(j for j in app.jobs if j.id == "ft-probes")
        assert job.spec.probes == ("Who?", MARKUP)
        spec = json.loads((job.output_dir / "spec.json").read_text())
        assert spec["probes"] == ["Who?", MARKUP]
        # The fake runner answers at step 0 and at its one checkpoint (step 4).
        await until(lambda: panel.display and "step 4" in panel.shown)
        shown = panel.shown
        assert "step 0 and step 4 (checkpoint-4" in shown
        assert MARKUP in shown  # as typed: not parsed as markup
        assert f"answer 0 to {MARKUP}" in shown and f"answer 4 to {MARKUP}" in shown
        assert "answer 0 to Who?" in shown and "answer 4 to Who?" in shown


async def test_a_job_without_probes_hides_the_panel(make_app) -> None:
    app: SageApp = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=DATASET, task="ft-plain")
        await pilot.press("ctrl+s")
        await until(lambda: any(j.id == "ft-plain" and j.status == "completed" for j in app.jobs))
        await until(lambda: len(app.screen.query_one("#finetune-loss").losses) == 4)
        assert not app.screen.query_one(ProbeAnswersPanel).display


def test_prompts_split_at_the_separator_and_answers_stay_data() -> None:
    assert probe_prompts("") == ()
    assert probe_prompts(" a | b|c |  | d ") == ("a", "b|c", "d")
    rounds = [
        ProbeRound(0, None, 0.5, (ProbeAnswer(MARKUP, "I do\nnot know"),)),
        ProbeRound(10, "checkpoint-10", 0.4, (), "RuntimeError: boom [red]x[/red]"),
    ]
    assert probes_caption((MARKUP,), []) == (
        "probes (1 prompt): waiting for the base model's answers (step 0)"
    )
    assert probes_caption((MARKUP,), rounds) == (
        "probes (1 prompt): step 0 and step 10 (checkpoint-10, 0.4 s)"
    )
    text = probes_text(rounds).plain
    assert text.splitlines() == [
        MARKUP,
        "  step 0  I do not know",
        "probe at step 10 failed: RuntimeError: boom [red]x[/red]",
    ]
