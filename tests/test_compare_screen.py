"""The Compare screen through Pilot over the scripted engine: panes side by side from one
engine, a saved compare conversation reopened from Chat's list, blind A/B with a one-key vote
and the leaderboard, and what is refused (fast; the real engine answers in test_compare)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_tui.core.arena import VoteStore
from sage_tui.core.conversations import ConversationStore
from sage_tui.services import Services
from sage_tui.ui.app import SageApp
from sage_tui.ui.widgets.chat_message import ChatMessage
from sage_tui.ui.widgets.compare_pane import ComparePane
from tests.conftest import BUILTIN
from tests.support.fake_engine import FakeEngines, adapter_folder
from tests.support.waiting import until

REPLY = "The capital of France is Paris."


@pytest.fixture
def app(provisioned_services: Services, tmp_path: Path) -> SageApp:
    for name in ("tuned-a", "tuned-b"):
        provisioned_services.registry.register_adapter(
            name, adapter_folder(tmp_path / name), BUILTIN
        )
    return SageApp(provisioned_services)


def panes(app: SageApp) -> list[ComparePane]:
    return list(app.screen.query(ComparePane))


def pane_texts(app: SageApp) -> list[list[str]]:
    return [[m.text for m in pane.query(ChatMessage)] for pane in panes(app)]


async def ask(app: SageApp, pilot, text: str) -> None:
    prompt = app.screen.query_one("#compare-input")
    prompt.focus()
    prompt.value = text
    turns = app.screen.turns
    await pilot.press("enter")
    await until(lambda: app.screen.turns > turns and all(p.answer.stats for p in panes(app)), 20)


async def open_compare(app: SageApp, pilot, models: list[str]) -> None:
    await until(lambda: app.engine.ready)
    app.open_compare(models)
    await until(lambda: app.current_mode == "compare" and len(panes(app)) == len(models))
    await pilot.pause()


async def test_three_models_answer_side_by_side_and_the_conversation_reopens(
    app: SageApp, engines: FakeEngines
) -> None:
    async with app.run_test(size=(160, 45)) as pilot:
        await open_compare(app, pilot, [BUILTIN, "tuned-a", "tuned-b"])
        assert [pane.title for pane in panes(app)] == [BUILTIN, "tuned-a", "tuned-b"]

        await ask(app, pilot, "What is the capital of France?")
        first = [REPLY, f"[tuned-a] {REPLY}", f"[tuned-b] {REPLY}"]
        assert pane_texts(app) == [["What is the capital of France?", r] for r in first]
        for pane in panes(app):
            assert "tokens/s" in pane.answer.stats and pane.title in pane.answer.stats
        assert engines.script.started == [BUILTIN]  # one engine load, no reload for adapters
        assert sorted(engines.script.adapters, key=str) == [None, "tuned-a", "tuned-b"]

        # Each model goes on with its own side of the conversation.
        await ask(app, pilot, "And of Italy?")
        sent = {tuple(m["content"] for m in p) for p in engines.script.prompts[-3:]}
        assert sent == {("What is the capital of France?", r, "And of Italy?") for r in first}

        saved = ConversationStore(app.services.store)
        record = saved.recent()[0]
        assert record.models == (BUILTIN, "tuned-a", "tuned-b")
        messages = saved.messages(record.id)
        assert [(m.role, m.model) for m in messages[:4]] == [
            ("user", None),
            ("assistant", BUILTIN),
            ("assistant", "tuned-a"),
            ("assistant", "tuned-b"),
        ]
        assert all("cut_off" not in m.stats for m in messages if m.role == "assistant")

        # Chat's list shows it as a comparison; choosing it reopens it in its panes.
        await pilot.press("ctrl+n")
        await until(lambda: pane_texts(app) == [[], [], []])
        await pilot.press("f3")
        await pilot.press("ctrl+o")
        listing = app.screen.query_one("#chat-conversations")
        await until(lambda: len(listing.children) == 1)
        assert "[3 side by side]" in str(listing.children[0].query_one("Label").render())
        await pilot.press("enter")
        await until(lambda: app.current_mode == "compare" and len(pane_texts(app)[0]) == 4)
        assert pane_texts(app)[1][3] == f"[tuned-a] {REPLY}"
        await ask(app, pilot, "And of Spain?")
        assert len(saved.messages(record.id)) == 12  # the same conversation went on


async def test_a_blind_vote_takes_one_key_then_names_the_models(
    app: SageApp, engines: FakeEngines
) -> None:
    async with app.run_test(size=(160, 45)) as pilot:
        await open_compare(app, pilot, [BUILTIN, "tuned-a"])
        await pilot.press("ctrl+b")
        await until(lambda: [pane.title for pane in panes(app)] == ["A", "B"])
        await ask(app, pilot, "What is the capital of France?")
        vote = app.screen.query_one("#compare-vote")
        assert vote.display and vote.has_focus
        authors = [pane.answer.author for pane in panes(app)]
        assert authors == ["A", "B"]
        stats = " ".join(pane.answer.stats for pane in panes(app))
        assert BUILTIN not in stats and "tuned-a" not in stats  # nothing gives a side away
        pair = app.screen.session.blind

        await pilot.press("a")
        await until(lambda: not vote.display)
        [stored] = VoteStore(app.services.store).all()
        assert (stored.model_a, stored.model_b, stored.verdict) == (pair.model_a, pair.model_b, "a")
        assert stored.prompt == "What is the capital of France?"
        assert [pane.answer.author for pane in panes(app)] == [
            f"A: {pair.model_a}",
            f"B: {pair.model_b}",
        ]
        board = app.screen.query_one("#compare-leaderboard")
        await until(lambda: board.display and board.row_count == 2)
        winner = board.get_row_at(0)
        assert str(winner[0]) == pair.model_a and str(winner[3]) == "1/0/0"
        assert ConversationStore(app.services.store).recent() == []  # a blind turn is a vote


async def test_an_empty_blind_reply_cannot_be_voted_on(app: SageApp, engines: FakeEngines) -> None:
    async with app.run_test(size=(160, 45)) as pilot:
        await open_compare(app, pilot, [BUILTIN, "tuned-a"])
        await pilot.press("ctrl+b")
        await until(lambda: [pane.title for pane in panes(app)] == ["A", "B"])
        engines.script.reply = ""  # the base says nothing (the adapter still names itself)
        await ask(app, pilot, "Say nothing.")
        await pilot.press("t")
        await until(lambda: any("Vote not counted" in str(n.message) for n in app._notifications))
        assert VoteStore(app.services.store).all() == []
        assert app.screen.query_one("#compare-vote").display  # the pair can still be voted on


async def test_models_of_two_bases_are_refused_with_the_reason(
    app: SageApp, builtin_model_dir: Path, tmp_path: Path
) -> None:
    twin = tmp_path / "twin"
    twin.symlink_to(builtin_model_dir)
    app.services.registry.import_model(str(twin), name="smol-twin")
    async with app.run_test(size=(160, 45)) as pilot:
        await until(lambda: app.engine.ready)
        app.open_compare([BUILTIN, "smol-twin"])
        await until(lambda: app.current_mode == "compare" and app.screen.query("#compare-base"))
        line = app.screen.query_one("#compare-base")
        await until(lambda: "compare models of one base" in str(line.render()))
        assert "is on base smol-twin" in str(line.render()) or "smol-twin on smol-twin" in str(
            line.render()
        )
        assert panes(app) == []
        prompt = app.screen.query_one("#compare-input")
        prompt.value = "Hello?"
        prompt.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert prompt.value == "Hello?"  # nothing sent, nothing lost
