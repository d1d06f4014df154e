"""A finished job on the Finetune screen: `e` evaluates it beside the loss chart, `v` shows every
row, `k` opens Compare mode with its base and adapter (fake runner, scripted engine: fast; the
real evaluation on real vLLM is in test_evaluation)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sage_tui.studio.evaluation import EVALUATION_FILE
from sage_tui.ui.widgets.compare_pane import ComparePane
from sage_tui.ui.widgets.eval_view import EvalPanel, EvalRowsModal
from tests.conftest import BUILTIN
from tests.support.fake_engine import adapter_folder
from tests.support.waiting import until
from tests.test_finetune_screen import DATASET, MODES, fill, make_app, open_finetune

__all__ = ["make_app"]  # the fixture, imported for pytest


async def finished_job(app, pilot, task: str, tmp_path: Path) -> None:
    await open_finetune(app, pilot)
    fill(app, dataset=DATASET, task=task)
    await pilot.press("ctrl+s")
    await until(lambda: app.jobs and app.jobs[0].status == "completed")
    for file in adapter_folder(tmp_path / "adapter").iterdir():
        shutil.copy(file, app.jobs[0].output_dir / file.name)
    app.screen.query_one("#finetune-jobs").focus()


async def test_evaluate_a_finished_job_then_see_every_row(make_app, tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await finished_job(app, pilot, "ft-eval", tmp_path)
        panel = app.screen.query_one(EvalPanel)
        await until(lambda: "not evaluated" in panel.caption)

        await pilot.press("e")
        await until(lambda: panel.evaluation is not None, 30)
        evaluation = panel.evaluation
        adapter = "sage-finetuned-ft-eval"
        assert evaluation.models == [BUILTIN, adapter]
        assert not evaluation.held_out  # the job held none out: its training rows, said so
        assert "4 rows of sage_tui_facts.jsonl" in panel.caption
        assert [str(c.header) for c in panel.summary.columns] == ["score", "base", adapter]
        names = [str(cell) for cell in panel.summary.columns[0].cells]
        assert "token_f1" in names
        # The reference's loss under each model comes last; the scripted adapter halves it.
        assert names[-2:] == ["loss (lower is better)", "perplexity (lower is better)"]
        assert evaluation.summary[adapter]["loss"] < evaluation.summary[BUILTIN]["loss"]
        saved = json.loads((app.jobs[0].output_dir / EVALUATION_FILE).read_text())
        assert saved["models"] == [BUILTIN, adapter] and len(saved["rows"]) == 4

        await pilot.press("v")
        await until(lambda: isinstance(app.screen, EvalRowsModal))
        rows = app.screen.query_one("#eval-rows")
        assert rows.row_count == 4
        first = " ".join(str(cell) for cell in rows.get_row_at(0))
        assert "[sage-finetuned-ft-eval]" in first  # the adapter's answer, beside the base's
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, EvalRowsModal))


async def test_k_opens_compare_with_the_base_and_the_adapter(make_app, tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await finished_job(app, pilot, "ft-cmp", tmp_path)
        await pilot.press("k")
        await until(lambda: app.current_mode == "compare" and len(app.screen.panes) == 2)
        assert [pane.title for pane in app.screen.query(ComparePane)] == [
            BUILTIN,
            "sage-finetuned-ft-cmp",
        ]


async def test_only_a_completed_job_is_evaluated(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await open_finetune(app, pilot)
        MODES["ft-bad"] = "fail"
        fill(app, dataset=DATASET, task="ft-bad")
        await pilot.press("ctrl+s")
        await until(lambda: app.jobs and app.jobs[0].status == "failed")
        app.screen.query_one("#finetune-jobs").focus()
        for key in ("e", "k"):
            await pilot.press(key)
            await until(
                lambda: any("only a completed job" in str(n.message) for n in app._notifications)
            )
            app.clear_notifications()
        assert app.current_mode == "finetune"
        assert app.screen.query_one(EvalPanel).evaluation is None


async def test_the_evaluation_is_read_again_and_an_unreadable_one_says_so(
    make_app, tmp_path: Path
) -> None:
    app = make_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await finished_job(app, pilot, "ft-torn", tmp_path)
        # Written from elsewhere (as `sage-tui eval` would): read when the screen is back.
        (app.jobs[0].output_dir / EVALUATION_FILE).write_text('{"models": ["a", "b"], "ro')
        await pilot.press("f3")
        await pilot.press("f1")
        panel = app.screen.query_one(EvalPanel)
        await until(lambda: "cannot be read back" in panel.caption)
        assert "evaluate the job again" in panel.caption
        await pilot.press("e")
        await until(lambda: panel.evaluation is not None, 30)
        assert json.loads((app.jobs[0].output_dir / EVALUATION_FILE).read_text())["rows"]
