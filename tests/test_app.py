"""The App shell driven through Pilot: modes by key, the status line, first-launch work."""

from __future__ import annotations

import asyncio

import pytest
from rich.text import Text
from textual.notifications import Notify
from textual.widgets import Input, Static

from sage_tui.core.store import ACTIVE_MODEL_KEY, ModelRecord
from sage_tui.services import Services, open_services
from sage_tui.studio import EngineState
from sage_tui.ui.app import SageApp
from sage_tui.ui.screens.chat import ChatScreen
from sage_tui.ui.screens.finetune import FinetuneScreen
from sage_tui.ui.screens.models import ModelsScreen
from tests.conftest import BUILTIN, FakeMonitor, no_gpu_snapshot, two_gpu_snapshot
from tests.support.waiting import until


def status_laid_out(app: SageApp) -> bool:
    """Whether the status line is laid out for what it says: after the engine's words change,
    the model part (sized to its text) is laid out again on a later frame, and a snapshot
    taken before that (under load) shows the figures wrapped into the cells the old words
    left."""
    for box in app.screen.query(".status-model").results(Static):
        text = box.content
        if isinstance(text, Text) and box.content_size.width != text.cell_len:
            return False
    return True


async def settle(app: SageApp) -> None:
    """Wait for everything but the endless resource poller, for the first sample and for the
    status line's layout; text boxes stop blinking (a snapshot taken mid-blink differs from
    one taken between blinks)."""
    for _ in range(200):
        busy = [w for w in app.workers if w.group != "resources" and not w.is_finished]
        if not busy and app.resources is not None and status_laid_out(app):
            for box in app.screen.query(Input):
                box.cursor_blink = False
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the app did not settle: {busy}, resources={app.resources}")


async def engine_tried(app: SageApp) -> None:
    """Settle, then wait for the engine's first load to have ended (snapshots then set the
    engine's state themselves, without the load's result arriving after)."""
    await settle(app)
    await until(lambda: app.engine.state not in (EngineState.LOADING, EngineState.IDLE))


async def closed(monitor: FakeMonitor) -> bool:
    """The poller thread closes the monitor once the App has cancelled it."""
    for _ in range(100):
        if monitor.closed:
            return True
        await asyncio.sleep(0.02)
    return False


def status_text(app: SageApp, part: str) -> str:
    return str(app.screen.query_one(f".status-{part}", Static).render())


async def test_keys_switch_the_three_modes(services: Services) -> None:
    app = SageApp(services)
    async with app.run_test(size=(120, 30)) as pilot:
        assert isinstance(app.screen, ChatScreen)
        await pilot.press("f1")  # the chat input has focus: F-keys switch from anywhere
        assert app.current_mode == "finetune" and isinstance(app.screen, FinetuneScreen)
        await pilot.press("2")
        assert app.current_mode == "models" and isinstance(app.screen, ModelsScreen)
        await pilot.press("3")
        assert app.current_mode == "chat" and isinstance(app.screen, ChatScreen)
        await pilot.press("1")  # typed into the chat input, not a mode switch
        assert app.current_mode == "chat"
        assert app.screen.query_one("#chat-input").value == "1"
        await pilot.press("f2")
        assert app.current_mode == "models"
        # The modes are in the footer and in the command palette's key list.
        keys = {b.key: b.description for (_, b, _, _) in app.active_bindings.values()}
        assert keys["1"] == keys["f1"] == "Finetune"
        assert keys["2"] == "Models" and keys["3"] == "Chat"


async def test_status_line_shows_every_gpu(services: Services) -> None:
    services.store.upsert_model(ModelRecord("qwen-7b", "base", "local", "/m/qwen"))
    services.store.set_setting(ACTIVE_MODEL_KEY, "qwen-7b")
    monitor = services.monitor
    monitor.snapshot = two_gpu_snapshot()
    app = SageApp(services)
    async with app.run_test(size=(160, 30)) as pilot:
        await settle(app)
        resources = status_text(app, "resources")
        assert "GPU0 61.0/80.0 GiB 87%" in resources
        assert "GPU1 2.0/80.0 GiB 0%" in resources
        assert "qwen-7b" in status_text(app, "model")
        await pilot.press("f2")  # every screen carries the same figures
        await pilot.pause()
        assert "GPU0 61.0/80.0 GiB" in status_text(app, "resources")
    assert await closed(monitor)


async def test_status_line_without_gpus_says_so_and_shows_cpu(services: Services) -> None:
    app = SageApp(services)
    async with app.run_test(size=(160, 30)):
        await settle(app)
        resources = status_text(app, "resources")
        assert "no GPU: no NVIDIA driver found" in resources
        assert "CPU 25%" in resources and "RAM 3.0 GiB/24.0 GiB" in resources
        assert "none" in status_text(app, "model")


async def test_resources_are_polled_repeatedly(settings) -> None:
    monitor = FakeMonitor(no_gpu_snapshot())
    services = open_services(
        settings.with_changes(resource_poll_seconds=0.02, default_model=""), monitor=monitor
    )
    app = SageApp(services)
    async with app.run_test():
        await asyncio.sleep(0.3)
    assert monitor.samples >= 5
    assert await closed(monitor)


async def test_first_launch_registers_the_builtin_model(
    provisioned_services: Services, engines
) -> None:
    """The home holds the converted model but nothing is registered yet (a new database)."""
    provisioned_services.registry.remove(BUILTIN)
    services = open_services(
        provisioned_services.settings.with_changes(default_model=BUILTIN),
        monitor=FakeMonitor(no_gpu_snapshot()),
        engine_factory=engines,
    )
    app = SageApp(services)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(app)
        assert app.active_model == BUILTIN
        assert app.model_status == ""
        await until(lambda: app.engine.ready)  # and the engine started for it
        await pilot.press("f2")
        await settle(app)
        tree = app.screen.query_one("#models-tree")
        await until(lambda: len(tree.root.children) == 1)
        node = tree.root.children[0]
        assert node.data == BUILTIN and str(node.label).split() == ["*", BUILTIN, "built-in"]


async def test_a_failing_provision_is_shown_and_the_app_keeps_working(settings) -> None:
    services = open_services(
        settings.with_changes(default_model="no-such-model"), monitor=FakeMonitor(no_gpu_snapshot())
    )
    notes: list[str] = []
    app = SageApp(services)

    def hook(message) -> None:
        if isinstance(message, Notify):
            notes.append(message.notification.message)

    async with app.run_test(size=(120, 30), message_hook=hook) as pilot:
        await settle(app)
        await pilot.pause()
        assert any("unknown built-in model 'no-such-model'" in note for note in notes), notes
        await pilot.press("f2")
        assert app.current_mode == "models"


async def test_unreadable_gpus_are_not_shown_as_no_gpu(services: Services) -> None:
    from dataclasses import replace

    services.monitor.snapshot = replace(
        no_gpu_snapshot(), no_gpu_reason=None, gpu_error="NVML failed to start: Unknown Error"
    )
    app = SageApp(services)
    async with app.run_test(size=(160, 30)):
        await settle(app)
        resources = status_text(app, "resources")
        assert "GPUs unreadable: NVML failed to start: Unknown Error" in resources
        assert "no GPU" not in resources


@pytest.mark.parametrize("when", ["loading", "ready"])
async def test_quitting_does_not_wait_for_the_pollers(
    provisioned_services: Services, engines, when: str
) -> None:
    # ctrl+q waited for every worker, the endless pollers too, when no reply was streaming.
    engines.script.load_seconds = 2.0
    app = SageApp(provisioned_services)
    async with app.run_test():
        await until(lambda: app.engine.state is EngineState.LOADING)
        if when == "ready":
            await until(lambda: app.engine.state is EngineState.READY)
        quitting = asyncio.ensure_future(app.action_quit())  # what ctrl+q runs
        done, _ = await asyncio.wait([quitting], timeout=20)
        if not done:
            quitting.cancel()  # lets the waiting end, so the test fails instead of hanging
            pytest.fail(f"quitting while the engine was {when} did not end within 20 s")
        await until(lambda: not app.is_running)
    assert engines.script.live == 0  # the engine was stopped, its memory freed
