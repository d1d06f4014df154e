"""The Chat screen driven through Pilot over the scripted engine (fast and deterministic; the
real engines answer in test_use_as_backend, test_engine_manager and test_engine_death)."""

from __future__ import annotations

import re

import pytest

from sage_tui.core.conversations import ConversationStore
from sage_tui.services import Services
from sage_tui.studio import EngineState
from sage_tui.ui.app import SageApp
from sage_tui.ui.widgets.chat_message import ChatMessage
from tests.conftest import BUILTIN
from tests.support.fake_engine import FakeEngines
from tests.support.waiting import until

LONG_STORY = " ".join(f"word{i}" for i in range(400))


@pytest.fixture
def app(provisioned_services: Services) -> SageApp:
    return SageApp(provisioned_services)


def messages(app: SageApp) -> list[ChatMessage]:
    return list(app.screen.query(ChatMessage))


async def ask(app: SageApp, pilot, text: str, max_tokens: int = 24) -> None:
    app.screen.query_one("#chat-temperature").value = "0"
    app.screen.query_one("#chat-max-tokens").value = str(max_tokens)
    prompt = app.screen.query_one("#chat-input")
    prompt.focus()
    prompt.value = text
    await pilot.press("enter")


async def test_chat_streams_stops_and_reopens(app: SageApp, engines: FakeEngines) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.engine.ready)
        assert app.active_model == BUILTIN

        await ask(app, pilot, "What is the capital of France?")
        await until(lambda: app.screen.reply is None and len(messages(app)) == 2)
        user, answer = messages(app)
        assert user.text == "What is the capital of France?"
        assert answer.text == "The capital of France is Paris."
        assert "tokens/s" in answer.stats and BUILTIN in answer.stats
        assert app.screen.query_one("#chat-input").value == ""
        # The engine got the conversation through the chat template's messages.
        assert engines.script.prompts[-1][-1]["content"] == "What is the capital of France?"

        # Esc stops a long reply; what arrived is kept and marked.
        engines.script.reply, engines.script.token_seconds = LONG_STORY, 0.01
        await ask(app, pilot, "Write a very long story about a lighthouse keeper.", 400)
        await until(lambda: app.screen.reply is not None and len(messages(app)[-1].body.source) > 0)
        await pilot.press("escape")
        await until(lambda: app.screen.reply is None)
        stopped = messages(app)[-1]
        assert "stopped" in stopped.stats
        assert int(re.search(r"· (\d+) tokens ·", stopped.stats).group(1)) < 400

        # Everything was saved; a new chat is empty; reopening shows the messages.
        saved = ConversationStore(app.services.store)
        conversation = saved.recent()[0]
        assert [m.role for m in saved.messages(conversation.id)] == ["user", "assistant"] * 2
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert messages(app) == []
        await pilot.press("ctrl+o")
        listing = app.screen.query_one("#chat-conversations")
        await until(lambda: len(listing.children) == 1)
        await pilot.press("enter")
        await until(lambda: len(messages(app)) == 4)
        assert "Paris" in messages(app)[1].text
        assert "tokens/s" in messages(app)[1].stats


async def test_empty_message_and_bad_settings_are_refused(app: SageApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.engine.ready)
        await ask(app, pilot, "   ")
        await pilot.pause()
        assert messages(app) == []
        app.screen.query_one("#chat-input").value = "Hello"
        app.screen.query_one("#chat-top-p").value = "lots"
        await pilot.press("enter")
        await pilot.pause()
        assert messages(app) == []
        assert app.screen.query_one("#chat-input").value == "Hello"  # nothing lost


async def test_an_engine_that_dies_mid_reply_is_reloaded_by_the_next_message(
    app: SageApp, engines: FakeEngines
) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.engine.ready)
        engines.script.die_after_tokens = 3
        await ask(app, pilot, "What is the capital of France?")
        await until(lambda: app.engine.state is EngineState.STOPPED)
        await until(lambda: app.screen.reply is None)
        cut = messages(app)[-1]
        assert cut.text == "The capital of " and "stopped" in cut.stats  # kept, marked
        notice = str(app.screen.query_one("#chat-engine").render())
        assert "The engine stopped: its EngineCore process was killed (SIGKILL)" in notice
        assert "engine stopped" in str(app.screen.query_one(".status-model").render())

        engines.script.die_after_tokens = None
        await ask(app, pilot, "And of Italy?")
        await until(lambda: app.engine.ready and len(messages(app)) == 4)
        assert messages(app)[-1].text == "The capital of France is Paris."
        assert engines.script.started == [BUILTIN, BUILTIN]


async def test_ctrl_r_reloads_an_engine_that_failed(app: SageApp, engines: FakeEngines) -> None:
    engines.script.load_error = RuntimeError("CUDA error: an illegal memory access")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.engine.state is EngineState.FAILED)
        notice = str(app.screen.query_one("#chat-engine").render())
        assert "RuntimeError: CUDA error: an illegal memory access" in notice
        engines.script.load_error = None
        await pilot.press("ctrl+r")
        await until(lambda: app.engine.ready)
        assert not app.screen.query_one("#chat-engine").display


async def test_markup_in_a_title_is_shown_as_text(app: SageApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.engine.ready)
        await ask(app, pilot, "what does [/INST] mean? [bold]x[/]")
        await until(lambda: app.screen.reply is None and len(messages(app)) == 2)
        await pilot.press("ctrl+o")
        listing = app.screen.query_one("#chat-conversations")
        await until(lambda: len(listing.children) == 1)
        await pilot.pause()
        assert "what does [/INST] mean?" in str(listing.children[0].query_one("Label").render())
