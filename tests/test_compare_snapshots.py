"""How the Compare screen looks: three models side by side, a blind pair before and after the
vote (the scripted engine answers; the figures lines are fixed, timings vary run to run)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from textual.widgets import Input

from sage_tui.services import Services
from sage_tui.ui.app import SageApp
from tests.conftest import BUILTIN
from tests.support.fake_engine import adapter_folder
from tests.support.waiting import until
from tests.test_app import settle

SIZE = (140, 34)
FIGURES = "first token 0.05 s · 41.0 tokens/s · 8 tokens"


@pytest.fixture
def app(provisioned_services: Services, tmp_path: Path) -> SageApp:
    for name in ("facts-v1", "facts-v2"):
        provisioned_services.registry.register_adapter(
            name, adapter_folder(tmp_path / name), BUILTIN
        )
    return SageApp(provisioned_services)


def steady(app: SageApp) -> None:
    """No blinking cursor: a snapshot taken mid-blink differs from one taken between blinks."""
    for box in app.screen.query(Input):
        box.cursor_blink = False


async def answered(pilot, models: list[str], prompt: str, blind: bool = False) -> None:
    app = pilot.app
    await until(lambda: app.engine.ready)
    app.open_compare(models)
    await until(lambda: app.current_mode == "compare" and len(app.screen.panes) == len(models))
    screen = app.screen
    screen.session.rng = random.Random(7)
    if blind:
        await pilot.press("ctrl+b")
        await until(lambda: [pane.title for pane in screen.panes] == ["A", "B"])
    box = screen.query_one("#compare-input")
    steady(app)
    box.focus()
    box.value = prompt
    turns = screen.turns
    await pilot.press("enter")
    await until(lambda: screen.turns > turns and all(p.answer.stats for p in screen.panes))
    for pane in screen.panes:  # timings vary from run to run
        name = "" if blind else f"{pane.title} · "
        pane.answer.show_stats(name + FIGURES)
    app.clear_notifications()
    await settle(app)
    await pilot.pause()


def test_side_by_side(snap_compare, app: SageApp) -> None:
    async def show(pilot) -> None:
        await answered(pilot, [BUILTIN, "facts-v1", "facts-v2"], "What is the capital of France?")

    assert snap_compare(app, terminal_size=SIZE, run_before=show)


def test_blind_before_the_vote(snap_compare, app: SageApp) -> None:
    async def show(pilot) -> None:
        await answered(pilot, [BUILTIN, "facts-v1"], "What is the capital of France?", blind=True)

    assert snap_compare(app, terminal_size=SIZE, run_before=show)


def test_blind_after_the_vote(snap_compare, app: SageApp) -> None:
    async def show(pilot) -> None:
        await answered(pilot, [BUILTIN, "facts-v1"], "What is the capital of France?", blind=True)
        await pilot.press("b")
        board = pilot.app.screen.query_one("#compare-leaderboard")
        await until(lambda: board.display and board.row_count == 2)
        pilot.app.clear_notifications()
        steady(pilot.app)
        await settle(pilot.app)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=show)
