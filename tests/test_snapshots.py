"""How each mode looks, with fixed figures: two H100s, one busy with training."""

from __future__ import annotations

import time

import pytest

from sage_tui.core.store import ACTIVE_MODEL_KEY, ModelRecord
from sage_tui.services import Services
from sage_tui.ui.app import SageApp
from tests.conftest import FakeMonitor, two_gpu_snapshot
from tests.test_app import settle

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
    return SageApp(
        services, FakeMonitor(two_gpu_snapshot()), provision_default=False, start_engine=False
    )


@pytest.mark.parametrize("key", ["f1", "f2", "f3"], ids=["finetune", "models", "chat"])
def test_mode(snap_compare, app: SageApp, key: str) -> None:
    async def show(pilot) -> None:
        pilot.app.engine_state = "ready"
        await pilot.press(key)
        await settle(pilot.app)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=show)


def test_chat_while_the_engine_loads(snap_compare, app: SageApp) -> None:
    async def show(pilot) -> None:
        await settle(pilot.app)
        pilot.app.engine_loading_since = time.monotonic() - 12.2
        pilot.app.engine_state = "loading"
        pilot.app.model_status = "loading qwen2.5-7b-instruct (vllm, cuda)"
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=show)
