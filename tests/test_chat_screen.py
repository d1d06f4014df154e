"""The Chat screen driven through Pilot, answering with a real engine (transformers + peft,
which loads in seconds; the vLLM path is covered in test_engine_manager)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sage_tui.core.store import ConversationStore
from sage_tui.services import Services, open_services
from sage_tui.ui.app import SageApp
from sage_tui.ui.widgets.chat_message import ChatMessage
from tests.conftest import BUILTIN, FakeMonitor, no_gpu_snapshot
from tests.support.waiting import until

pytestmark = pytest.mark.slow


@pytest.fixture
def chat_services(settings, builtin_model_dir: Path) -> Services:
    services = open_services(settings.with_changes(engine="transformers"))
    services.settings.paths.model_dir(BUILTIN).symlink_to(builtin_model_dir)
    services.registry.pull(BUILTIN)
    yield services
    services.store.close()


def messages(app: SageApp) -> list[ChatMessage]:
    return list(app.screen.query(ChatMessage))


async def ask(app: SageApp, pilot, text: str, max_tokens: int = 24) -> None:
    app.screen.query_one("#chat-temperature").value = "0"
    app.screen.query_one("#chat-max-tokens").value = str(max_tokens)
    prompt = app.screen.query_one("#chat-input")
    prompt.focus()
    prompt.value = text
    await pilot.press("enter")


async def test_chat_streams_stops_and_reopens(chat_services: Services) -> None:
    app = SageApp(chat_services, FakeMonitor(no_gpu_snapshot()))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.engine_state == "ready")
        assert app.active_model == BUILTIN

        await ask(app, pilot, "What is the capital of France?")
        await until(lambda: app.screen.reply is None and len(messages(app)) == 2)
        user, answer = messages(app)
        assert user.text == "What is the capital of France?"
        assert "Paris" in answer.text
        assert "tokens/s" in answer.stats and BUILTIN in answer.stats
        assert app.screen.query_one("#chat-input").value == ""

        # Esc stops a long reply; what arrived is kept and marked.
        await ask(app, pilot, "Write a very long story about a lighthouse keeper.", 400)
        await until(lambda: app.screen.reply is not None and len(messages(app)[-1].body.source) > 0)
        await pilot.press("escape")
        await until(lambda: app.screen.reply is None)
        stopped = messages(app)[-1]
        assert "stopped" in stopped.stats
        assert int(re.search(r"· (\d+) tokens ·", stopped.stats).group(1)) < 400

        # Everything was saved; a new chat is empty; reopening shows the messages.
        saved = ConversationStore(chat_services.store)
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


async def test_empty_message_and_bad_settings_are_refused(chat_services: Services) -> None:
    app = SageApp(chat_services, FakeMonitor(no_gpu_snapshot()))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.engine_state == "ready")
        await ask(app, pilot, "   ")
        await pilot.pause()
        assert messages(app) == []
        app.screen.query_one("#chat-input").value = "Hello"
        app.screen.query_one("#chat-top-p").value = "lots"
        await pilot.press("enter")
        await pilot.pause()
        assert messages(app) == []
        assert app.screen.query_one("#chat-input").value == "Hello"  # nothing lost
