"""The studio's engine use cases over the real manager and registry, with the scripted engine:
what a switch may change, engines that die, loads that fail in any way, quick switches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sage_tui.core.engines.base import Sampling
from sage_tui.core.engines.manager import EngineStopped, SwitchFailed
from sage_tui.services import Services
from sage_tui.studio import EngineState, Studio
from sage_tui.studio.state import EngineChanged
from tests.conftest import BUILTIN
from tests.support.fake_engine import FakeEngines, adapter_folder

HELLO = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = Sampling(temperature=0.0, max_tokens=24)


@pytest.fixture
def studio(provisioned_services: Services, tmp_path: Path) -> Studio:
    # A second base model: the same folder under another name, so switching to it reloads.
    twin = tmp_path / "twin"
    twin.symlink_to(provisioned_services.settings.paths.model_dir(BUILTIN))
    provisioned_services.registry.import_model(str(twin), name="twin")
    provisioned_services.registry.set_active(BUILTIN)
    return Studio(provisioned_services)


def states(studio: Studio) -> list[EngineState]:
    """The engine states the studio publishes from now on (repeats, e.g. detail lines of one
    load, left out)."""
    seen: list[EngineState] = []

    def record(event) -> None:
        if isinstance(event, EngineChanged) and (not seen or seen[-1] is not event.status.state):
            seen.append(event.status.state)

    studio.subscribe(record)
    return seen


async def test_a_failed_switch_leaves_the_active_model_as_it_was(
    studio: Studio, engines: FakeEngines
) -> None:
    await studio.engine.start()
    assert studio.engine.status.state is EngineState.READY
    engines.script.load_error = RuntimeError("CUDA out of memory")
    engines.script.failing_models = {"twin"}
    with pytest.raises(SwitchFailed, match="still using smollm2"):
        await studio.engine.switch("twin")
    # The previous model was loaded again and is what is active and shown.
    assert studio.services.registry.active_name == BUILTIN
    assert studio.engine.status.state is EngineState.READY
    assert studio.engine.status.model == BUILTIN
    assert "RuntimeError: CUDA out of memory" in studio.engine.status.error


async def test_use_as_backend_that_fails_changes_nothing(
    studio: Studio, engines: FakeEngines, tmp_path: Path
) -> None:
    """The regression: 设为后端 set the active model before the switch, so a failed switch left
    the database and the status line naming a model the engine did not serve."""
    adapter = adapter_folder(tmp_path / "tuned")
    studio.services.registry.register_adapter("tuned-twin", adapter, "twin")
    engines.script.load_error = RuntimeError("no memory left on GPU 0")
    with pytest.raises(SwitchFailed):
        await studio.use_as_backend("tuned-twin")
    assert studio.services.registry.active_name == BUILTIN
    active = studio.services.settings.paths.active_model_file
    assert not active.exists() or '"tuned-twin"' not in active.read_text()


async def test_any_load_failure_ends_in_failed_never_loading(
    studio: Studio, engines: FakeEngines
) -> None:
    seen = states(studio)
    engines.script.load_error = KeyError("num_hidden_layers")  # not a SageError
    await studio.engine.start()
    assert studio.engine.status.state is EngineState.FAILED
    assert "KeyError" in studio.engine.status.error
    assert seen == [EngineState.LOADING, EngineState.FAILED]
    engines.script.load_error = None
    await studio.engine.reload()
    assert studio.engine.status.state is EngineState.READY


async def test_an_engine_that_dies_mid_reply_is_noticed_and_reloaded(
    studio: Studio, engines: FakeEngines
) -> None:
    await studio.engine.start()
    engines.script.die_after_tokens = 2
    reply = await studio.engine.reply(HELLO, GREEDY)
    pieces: list[str] = []
    with pytest.raises(EngineStopped, match="engine stopped: its EngineCore process was killed"):
        async for piece in reply:
            pieces.append(piece)
    assert pieces == ["The ", "capital "] and reply.stats.finish_reason == "abort"
    await studio.engine.check_health()
    assert studio.engine.status.state is EngineState.STOPPED
    assert "killed" in studio.engine.status.line()
    # The next message loads a new engine and is answered.
    engines.script.die_after_tokens = None
    text = await (await studio.engine.reply(HELLO, GREEDY)).text()
    assert "Paris" in text
    assert engines.script.started == [BUILTIN, BUILTIN]
    assert studio.engine.status.state is EngineState.READY


async def test_a_death_between_replies_is_noticed_by_the_health_check(
    studio: Studio, engines: FakeEngines
) -> None:
    await studio.engine.start()
    assert await studio.engine.check_health() is None
    engines.current.dead = "its EngineCore process exited with code 137"
    assert await studio.engine.check_health() == "its EngineCore process exited with code 137"
    assert studio.engine.status.line() == (
        "engine stopped: its EngineCore process exited with code 137"
    )
    assert await studio.engine.check_health() is None  # said once
    assert studio.services.engines.loaded_base is None  # the next request reloads


async def test_two_quick_switches_never_load_two_engines_at_once(
    studio: Studio, engines: FakeEngines
) -> None:
    await studio.engine.start()
    engines.script.load_seconds = 0.4
    first = asyncio.ensure_future(studio.engine.switch("twin"))
    await asyncio.sleep(0.1)  # the first load is under way in its thread
    first.cancel()  # as a newer request would cancel an exclusive worker
    second = asyncio.ensure_future(studio.engine.switch(BUILTIN))
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert engines.script.most_live == 1
    assert engines.script.live == 1
    assert studio.services.registry.active_name == BUILTIN
    assert studio.engine.status.state is EngineState.READY


async def test_switches_in_a_row_report_ready_once_the_last_is_done(
    studio: Studio, engines: FakeEngines
) -> None:
    await studio.engine.start()
    engines.script.load_seconds = 0.2
    seen = states(studio)
    await asyncio.gather(studio.engine.switch("twin"), studio.engine.switch(BUILTIN))
    assert seen == [EngineState.LOADING, EngineState.READY]
    assert engines.script.started == [BUILTIN, "twin", BUILTIN]
    assert studio.services.registry.active_name == BUILTIN
