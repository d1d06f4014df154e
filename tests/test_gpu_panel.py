"""The GPU panel (ctrl+g) and the owners on the status line, driven through Pilot over the
fake NVML scene (tests/support/gpu_scene.py); the status line's fitting as a pure function."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import DataTable, Sparkline, Static

from sage_tui.core.gpu_history import HISTORY_SAMPLES
from sage_tui.core.gpu_owners import (
    ENGINE,
    OTHER,
    GpuOwners,
    OwnerShare,
    gpu_owners,
    job_owner,
)
from sage_tui.core.store import ACTIVE_MODEL_KEY, ModelRecord
from sage_tui.services import Services
from sage_tui.studio import EngineState, EngineStatus
from sage_tui.ui.app import SageApp
from sage_tui.ui.modals.gpu_panel import GpuPanel, GpuSection
from sage_tui.ui.screens.chat import ChatScreen
from sage_tui.ui.widgets.resource_line import describe_owners, fit_status
from tests.conftest import GIB, two_gpu_snapshot
from tests.support import gpu_scene
from tests.support.fake_processes import TableProcesses
from tests.support.waiting import until
from tests.test_app import engine_tried, settle


def _scene_app(services: Services, tmp_path: Path) -> SageApp:
    services.store.upsert_model(ModelRecord("qwen2.5-7b-instruct", "base", "hf", "/srv/qwen"))
    services.store.set_setting(ACTIVE_MODEL_KEY, "qwen2.5-7b-instruct")
    gpu_scene.stage(services, tmp_path)
    return SageApp(services)


async def _owned(app: SageApp) -> None:
    """Until a sample with ft-3 among the owners arrived (the job poll ran before it)."""
    await until(
        lambda: (
            app.resources is not None
            and app.resources.owners
            and app.resources.owners[0].share(job_owner("ft-3")) is not None
        )
    )


def _rows(section: GpuSection) -> list[list[str]]:
    table = section.query_one(DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_ctrl_g_shows_who_holds_each_gpu_and_esc_closes(
    services: Services, tmp_path: Path
) -> None:
    app = _scene_app(services, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _owned(app)
        keys = {b.key: b.description for (_, b, _, _) in app.active_bindings.values()}
        assert keys["ctrl+g"] == "GPUs"  # in the Footer and the command palette
        await pilot.press("ctrl+g")
        await until(lambda: isinstance(app.screen, GpuPanel) and app.screen.query(GpuSection))
        await pilot.pause()
        first, second = app.screen.query(GpuSection)
        assert _rows(first) == [
            ["ft-3", "6001", "alice", "21.0 GiB", "python -m sage_tui.core.training.runner ft-3"],
            ["engine", "5001", "alice", "9.1 GiB", "VLLM::EngineCore"],
            # Another user's command is data: markup shown as typed, ESC made visible.
            ["other", "7001", "bob", "4.0 GiB", "python [bold]train.py[/bold] --lr 1e-4 ␛[31m"],
            ["other", "8888", "?", "unknown", "pid 8888 (not visible here)"],
        ]
        assert _rows(second) == [
            ["ft-3", "6002", "alice", "20.0 GiB", "python -m sage_tui.core.training.workers 1"],
            ["other", "7002", "carol", "6.0 GiB", "/opt/conda/bin/python -m jupyter lab"],
        ]
        owners = str(first.query_one(".gpu-owners", Static).render())
        assert owners.startswith("engine 9.1 GiB · ft-3 21.0 GiB · others 4.0 GiB + 1 unknown")
        heading = str(first.query_one(".gpu-heading", Static).render())
        assert "NVIDIA H100 80GB HBM3  61.0 GiB / 80.0 GiB used  util 87%" in heading
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, ChatScreen))


async def test_the_panel_shows_the_past_not_an_empty_chart(
    services: Services, tmp_path: Path
) -> None:
    app = _scene_app(services, tmp_path)
    gpu_scene.seed_history(app.gpu_history)
    async with app.run_test(size=(120, 40)) as pilot:
        await _owned(app)
        await pilot.press("ctrl+g")
        await until(lambda: isinstance(app.screen, GpuPanel) and app.screen.query(GpuSection))
        await pilot.pause()
        section = app.screen.query(GpuSection).first()
        data = section.query_one(".gpu-util", Sparkline).data
        # 300 seeded, then the live one (the oldest dropped: the history is bounded); the live
        # sample arrives every poll with the same time and counts once.
        assert len(data) == HISTORY_SAMPLES and data[-1] == 87.0 and data[0] == 37.0
        label = str(section.query_one(".gpu-memory-label", Static).render())
        assert label.startswith("memory 61.0 GiB now, 40.0 GiB to 61.0 GiB")


async def test_the_panel_without_gpus_says_so_and_shows_cpu(services: Services) -> None:
    app = SageApp(services)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(app)
        await pilot.press("ctrl+g")
        await until(
            lambda: isinstance(app.screen, GpuPanel) and app.screen.query("#gpu-panel-none")
        )
        text = str(app.screen.query_one("#gpu-panel-none", Static).render())
        assert "No GPU figures on this machine." in text
        assert "no GPU: no NVIDIA driver found" in text and "CPU 25%" in text


async def test_the_status_line_fits_two_gpus_at_120_columns(services: Services) -> None:
    services.store.upsert_model(ModelRecord("qwen2.5-7b-instruct", "base", "hf", "/srv/qwen"))
    services.store.set_setting(ACTIVE_MODEL_KEY, "qwen2.5-7b-instruct")
    services.monitor.snapshot = two_gpu_snapshot()
    app = SageApp(services)
    async with app.run_test(size=(120, 30)) as pilot:
        await engine_tried(app)  # the model's folder is not there: its load fails, then
        app.engine = EngineStatus(EngineState.READY, "qwen2.5-7b-instruct")  # as if served
        await until(lambda: app.resources is not None)
        await pilot.pause()
        parts = [
            app.screen.query_one(f".status-{p}", Static) for p in ("tabs", "model", "resources")
        ]
        resources = parts[2]
        text = resources.render()
        assert "GPU1 2.0/80.0 GiB 0%" in str(text)  # the last GPU's utilisation is not cut
        assert resources.content_region.width >= Text(str(text)).cell_len
        assert parts[0].region.right <= parts[1].region.x < resources.region.x


async def test_the_status_line_names_the_owners_when_there_is_room(
    services: Services, tmp_path: Path
) -> None:
    app = _scene_app(services, tmp_path)
    async with app.run_test(size=(160, 30)) as pilot:
        await _owned(app)
        await engine_tried(app)
        app.engine = EngineStatus(EngineState.READY, "qwen2.5-7b-instruct")  # no words beside
        await pilot.pause()
        resources = str(app.screen.query_one(".status-resources", Static).render())
        assert resources == (
            "GPU0 61.0/80.0 GiB 87% · engine 9.1 · ft-3 21 · others 4.0+?"
            "  GPU1 27.0/80.0 GiB 41% · ft-3 20 · others 6.0"
        )


def _owners(*shares: OwnerShare) -> GpuOwners:
    return GpuOwners(0, (), shares)


@pytest.mark.parametrize(
    ("shares", "merge", "expected"),
    [
        ((), False, ""),
        ((OwnerShare(ENGINE, 0, 2, 2),), False, " · engine ?"),  # unknown, never 0
        ((OwnerShare(ENGINE, 9 * GIB, 1, 2),), False, " · engine 9.0+?"),
        (
            (OwnerShare(job_owner("ft-20250101-120000"), 21 * GIB, 0, 1),),
            False,
            " · …0101-120000 21",  # a long task id by its end
        ),
        (
            (
                OwnerShare(job_owner("ft-1"), 10 * GIB, 0, 1),
                OwnerShare(job_owner("ft-2"), 11 * GIB, 0, 1),
                OwnerShare(OTHER, GIB // 2, 0, 1),
            ),
            True,
            " · 2 jobs 21 · others 0.5",
        ),
    ],
)
def test_owner_summaries(shares: tuple, merge: bool, expected: str) -> None:
    assert str(describe_owners(_owners(*shares), merge_jobs=merge)) == expected


@pytest.mark.parametrize(
    ("width", "tabs", "owners"),
    [
        (200, " 1 Finetune  2 Models  3 Chat  4 Compare ", True),
        (110, " 1  2  3 Chat  4 ", True),
        (100, " 1  2  3 Chat  4 ", False),
    ],
)
def test_the_tabs_shorten_before_the_owners_go(width: int, tabs: str, owners: bool) -> None:
    snapshot = two_gpu_snapshot()
    snapshot = replace(snapshot, owners=gpu_owners(snapshot.gpus, {}, TableProcesses()))
    model = Text("model qwen2.5-7b-instruct")
    parts = fit_status(width, "chat", model, Text(), snapshot)
    assert str(parts.tabs) == tabs
    assert ("others 60" in str(parts.resources)) is owners
    assert "GPU1 2.0/80.0 GiB 0%" in str(parts.resources)


def test_loading_words_give_way_to_the_figures_but_trouble_does_not() -> None:
    model = Text("model qwen2.5-7b-instruct")
    words = Text("loading qwen2.5-7b-instruct (vllm, cuda) 12 s")
    parts = fit_status(120, "chat", model, words, two_gpu_snapshot())
    used = sum(p.cell_len for p in (parts.tabs, parts.model, parts.resources)) + 5
    assert used <= 120 and str(parts.model).endswith("…")
    kept = fit_status(120, "chat", model, words, two_gpu_snapshot(), trouble=True)
    assert str(kept.model).endswith("12 s")
