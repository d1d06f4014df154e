"""How the GPU panel and the status line's owners look over the fake NVML scene: the studio's
engine, a running job (ft-3) with a DDP worker, other users' processes, a pid not visible here
and memory NVML cannot read; five minutes of fixed history (tests/support/gpu_scene.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_tui.core.gpu_owners import job_owner
from sage_tui.core.store import ACTIVE_MODEL_KEY, ModelRecord
from sage_tui.services import Services
from sage_tui.studio import EngineState, EngineStatus
from sage_tui.ui.app import SageApp
from sage_tui.ui.modals.gpu_panel import GpuPanel, GpuSection
from tests.support import gpu_scene
from tests.support.waiting import until
from tests.test_app import engine_tried, settle


@pytest.fixture
def app(services: Services, tmp_path: Path) -> SageApp:
    services.store.upsert_model(ModelRecord("qwen2.5-7b-instruct", "base", "hf", "/srv/qwen"))
    services.store.set_setting(ACTIVE_MODEL_KEY, "qwen2.5-7b-instruct")
    gpu_scene.stage(services, tmp_path)
    app = SageApp(services)
    gpu_scene.seed_history(app.gpu_history)
    return app


async def _ready(pilot) -> None:
    app = pilot.app
    await engine_tried(app)
    app.engine = EngineStatus(EngineState.READY, "qwen2.5-7b-instruct")
    await until(
        lambda: (
            app.resources is not None
            and app.resources.owners
            and app.resources.owners[0].share(job_owner("ft-3")) is not None
        )
    )
    await settle(app)


def test_gpu_panel(snap_compare, app: SageApp) -> None:
    async def show(pilot) -> None:
        await _ready(pilot)
        await pilot.press("ctrl+g")
        await until(lambda: isinstance(pilot.app.screen, GpuPanel))
        await until(lambda: len(pilot.app.screen.query(GpuSection)) == 2)
        await settle(pilot.app)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=show)


def test_status_line_with_owners(snap_compare, app: SageApp) -> None:
    async def show(pilot) -> None:
        await _ready(pilot)
        box = pilot.app.screen.query_one("#chat-input")
        box.cursor_blink = False  # the cursor is in the snapshot: shown, in the same box
        box.focus()
        await until(lambda: pilot.app.focused is box)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(160, 24), run_before=show)
