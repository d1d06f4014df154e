"""How each mode looks, with fixed figures: two H100s, one busy with training."""

from __future__ import annotations

import pytest

from sage_tui.core.store import ACTIVE_MODEL_KEY, ModelRecord
from sage_tui.services import Services
from sage_tui.studio import EngineState, EngineStatus
from sage_tui.ui.app import SageApp
from sage_tui.ui.modals.model_actions import ConfirmModal
from sage_tui.ui.screens import chat as chat_screen
from tests.conftest import two_gpu_snapshot
from tests.support.waiting import until
from tests.test_app import engine_tried, settle

SIZE = (120, 30)


@pytest.fixture
def app(services: Services) -> SageApp:
    store = services.store
    store.upsert_model(
        ModelRecord("smollm2-135m-instruct", "base", "builtin", "/srv/models/smollm2")
    )
    store.upsert_model(ModelRecord("qwen2.5-7b-instruct", "base", "hf", "/srv/models/qwen2.5-7b"))
    store.upsert_model(
        ModelRecord(
            "sage-finetuned-job1",
            "adapter",
            "finetune",
            "/srv/outputs/job1",
            base_model="qwen2.5-7b-instruct",
        )
    )
    store.set_setting(ACTIVE_MODEL_KEY, "qwen2.5-7b-instruct")
    services.monitor.snapshot = two_gpu_snapshot()
    return SageApp(services)


@pytest.mark.parametrize("key", ["f1", "f2", "f3"], ids=["finetune", "models", "chat"])
def test_mode(snap_compare, app: SageApp, key: str) -> None:
    async def show(pilot) -> None:
        await engine_tried(pilot.app)
        pilot.app.engine = EngineStatus(EngineState.READY, "qwen2.5-7b-instruct")
        await pilot.press(key)
        await settle(pilot.app)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=show)


def test_chat_while_the_engine_loads(snap_compare, app: SageApp, monkeypatch) -> None:
    # The notice counts seconds since the load began: a fixed clock keeps "12 s" whatever the
    # machine's load (CI once caught it at 13 s).
    monkeypatch.setattr(chat_screen, "monotonic", lambda: 1012.2)

    async def show(pilot) -> None:
        await engine_tried(pilot.app)
        pilot.app.engine = EngineStatus(
            EngineState.LOADING,
            "qwen2.5-7b-instruct",
            "loading qwen2.5-7b-instruct (vllm, cuda)",
            since=1000.0,
        )
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=show)


def test_delete_confirmation(snap_compare, app: SageApp) -> None:
    """The Models screen asks before deleting, saying what happens to the files."""

    async def confirm(pilot) -> None:
        await engine_tried(pilot.app)
        pilot.app.engine = EngineStatus(EngineState.READY, "qwen2.5-7b-instruct")
        await pilot.press("f2")
        await settle(pilot.app)
        tree = pilot.app.screen.query_one("#models-tree")
        tree.cursor_line = 1  # the adapter under its base
        await settle(pilot.app)
        await pilot.press("d")
        await until(lambda: isinstance(pilot.app.screen, ConfirmModal))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=confirm)
