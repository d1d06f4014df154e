"""The Models screen over the real registry and the scripted engine: the tree and details, the
delete confirmation and its refusals, rename and import through their dialogs, the API server's
toggle, line and key (the snapshots of the tree and of the delete confirmation are in
test_snapshots)."""

from __future__ import annotations

import socket
from pathlib import Path

import openai
import pytest
from textual.widgets import Input

from sage_tui.cli.serve import api_server
from sage_tui.services import Services
from sage_tui.ui.app import SageApp
from sage_tui.ui.modals.api_key import ApiKeyModal
from sage_tui.ui.modals.model_actions import AskModal, ConfirmModal
from sage_tui.ui.widgets import server_line
from tests.conftest import BUILTIN
from tests.support.fake_engine import adapter_folder
from tests.support.waiting import until
from tests.test_app import settle
from tests.test_chat_screen import ask, messages


@pytest.fixture
def app(provisioned_services: Services, tmp_path: Path) -> SageApp:
    registry = provisioned_services.registry
    registry.register_adapter("facts-lora", adapter_folder(tmp_path / "facts"), BUILTIN, "local")
    twin = provisioned_services.settings.paths.model_dir("smol-merged")
    twin.symlink_to(Path(registry.get(BUILTIN).path).resolve(), target_is_directory=True)
    registry.register_merged(
        "smol-merged", twin, base=registry.get(BUILTIN), adapter=registry.get("facts-lora")
    )
    return SageApp(provisioned_services)


def names(app: SageApp) -> list[str]:
    tree = app.screen.query_one("#models-tree")
    return [node.data for node in tree.root.children] + [
        leaf.data for node in tree.root.children for leaf in node.children
    ]


async def open_models(app: SageApp, pilot, count: int) -> None:
    await until(lambda: app.engine.ready)
    await pilot.press("f2")
    await until(lambda: len(names(app)) == count)
    await settle(app)


def noted(app: SageApp, text: str) -> bool:
    return any(text in str(n.message) for n in app._notifications)


def highlight(app: SageApp, name: str) -> None:
    tree = app.screen.query_one("#models-tree")
    for line in range(tree.last_line + 1):
        if tree.get_node_at_line(line).data == name:
            tree.cursor_line = line
            return
    raise AssertionError(f"{name} is not in the tree")


def details(app: SageApp) -> str:
    screen = app.screen
    return "" if screen.details is None else f"{screen.details.record.name}"


async def test_the_tree_holds_adapters_under_their_base_and_shows_details(app: SageApp) -> None:
    async with app.run_test(size=(140, 40)) as pilot:
        await open_models(app, pilot, 3)
        tree = app.screen.query_one("#models-tree")
        bases = {node.data: [leaf.data for leaf in node.children] for node in tree.root.children}
        assert bases == {BUILTIN: ["facts-lora"], "smol-merged": []}
        highlight(app, "facts-lora")
        await until(lambda: details(app) == "facts-lora")
        facts = app.screen.details
        assert facts.facts.rank == 8 and facts.record.base_model == BUILTIN
        highlight(app, "smol-merged")
        await until(lambda: details(app) == "smol-merged")
        assert "merged" in str(tree.cursor_node.label)


async def test_delete_asks_then_deletes_and_refuses_the_chats_model(app: SageApp) -> None:
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await open_models(app, pilot, 3)
        highlight(app, BUILTIN)
        await pilot.press("d")
        await until(lambda: noted(app, "the chat's model"))
        assert not isinstance(app.screen, ConfirmModal)

        highlight(app, "facts-lora")
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("escape")  # No: nothing happens
        await until(lambda: not isinstance(app.screen, ConfirmModal))
        assert "facts-lora" in names(app)
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, ConfirmModal))
        await pilot.click("#confirm-ok")
        await until(lambda: "facts-lora" not in names(app))
        assert app.services.registry.get(BUILTIN)  # the rest is kept


async def test_rename_and_import_go_through_their_dialogs(app: SageApp, tmp_path: Path) -> None:
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await open_models(app, pilot, 3)
        highlight(app, "facts-lora")
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, AskModal))
        app.screen.query_one(Input).value = "facts-v2"
        await pilot.press("enter")
        await until(lambda: "facts-v2" in names(app))

        empty = tmp_path / "no-weights"
        empty.mkdir()
        (empty / "config.json").write_text('{"model_type": "llama"}')
        await pilot.press("i")
        await until(lambda: isinstance(app.screen, AskModal))
        app.screen.query_one(Input).value = str(empty)
        await pilot.press("enter")
        await until(lambda: noted(app, "no weights"))
        activity = app.screen.query_one("#models-activity")
        assert "not done" in str(activity.render()) and "no weights" in str(activity.render())

        lora = adapter_folder(tmp_path / "my-lora")
        await pilot.press("i")
        await until(lambda: isinstance(app.screen, AskModal))
        app.screen.query_one(Input).value = str(lora)
        await pilot.press("enter")
        await until(lambda: noted(app, "adapter of an unnamed base"))


async def test_merge_takes_an_adapter(app: SageApp) -> None:
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await open_models(app, pilot, 3)
        highlight(app, BUILTIN)
        await until(lambda: details(app) == BUILTIN)
        await pilot.press("m")
        await until(lambda: noted(app, "Merge takes an adapter"))


async def test_the_performance_panel_shows_the_active_models_replies(app: SageApp) -> None:
    async with app.run_test(size=(140, 40)) as pilot:
        await until(lambda: app.engine.ready)
        await pilot.press("f3")
        await ask(app, pilot, "What is the capital of France?")
        await until(lambda: app.screen.reply is None and len(messages(app)) == 2)
        await pilot.press("f2")
        panel = app.screen.query_one("#models-performance")
        await until(lambda: "1 recent replies" in str(panel.render()))
        assert BUILTIN in str(panel.render()) and "CPU" in str(panel.render())


@pytest.fixture
def serving(app: SageApp, monkeypatch) -> SageApp:
    """The app with the CLI's API server, which s starts on any free port (not 8765)."""
    app.services.api_server = api_server
    monkeypatch.setattr(server_line, "SERVE_PORT", 0)
    return app


def server_line_text(app: SageApp) -> str:
    return str(app.screen.query_one("#models-server").render())


def shown(app: SageApp, widget: str) -> str:
    return str(app.screen.query_one(f"#{widget}").render())


async def test_s_serves_the_chats_engine_and_the_line_counts_requests(serving: SageApp) -> None:
    app = serving
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await open_models(app, pilot, 3)
        assert server_line_text(app) == "API server off"
        await pilot.press("s")
        await until(lambda: app.studio.serving.state.running)
        state = app.studio.serving.state
        await until(lambda: state.url in server_line_text(app))
        assert "0 requests · 0 errors" in server_line_text(app)

        key = app.studio.serving.key()
        client = openai.AsyncOpenAI(base_url=state.url, api_key=key, max_retries=0)
        reply = await client.chat.completions.create(
            model=app.active_model, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
        await until(lambda: "1 request · 0 errors" in server_line_text(app))
        # The performance panel counts the API's reply with the chat's.
        await until(lambda: "1 recent replies" in shown(app, "models-performance"))

        await pilot.press("k")  # the key, with the URL a client takes
        await until(lambda: isinstance(app.screen, ApiKeyModal))
        assert key in shown(app, "api-key-value") and state.url in shown(app, "api-key-url")
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, ApiKeyModal))

        await pilot.press("s")
        await until(lambda: not app.studio.serving.state.running)
        await until(lambda: server_line_text(app) == "API server off")
        assert key not in app.services.settings.paths.api_log.read_text()


async def test_a_port_in_use_is_said_and_the_app_keeps_working(serving: SageApp, monkeypatch):
    app = serving
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    monkeypatch.setattr(server_line, "SERVE_PORT", taken.getsockname()[1])
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await open_models(app, pilot, 3)
        with taken:
            await pilot.press("s")
            await until(lambda: "in use" in server_line_text(app))
            assert server_line_text(app).startswith("API server: ")
            await until(lambda: noted(app, "in use"))
            assert not app.studio.serving.state.running
        highlight(app, "facts-lora")  # the screen answers as before
        await until(lambda: details(app) == "facts-lora")
        monkeypatch.setattr(server_line, "SERVE_PORT", 0)
        await pilot.press("s")  # the port is free again: it serves
        await until(lambda: app.studio.serving.state.running)
        await until(lambda: server_line_text(app).startswith("serving "))


async def test_a_front_end_without_a_server_says_so(app: SageApp) -> None:
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await open_models(app, pilot, 3)
        await pilot.press("s")
        reason = "this front end cannot serve the API"
        await until(lambda: server_line_text(app) == f"API server: {reason}")
        await until(lambda: noted(app, reason))
        await pilot.press("f3")  # the rest of the app answers
        await until(lambda: app.current_mode == "chat")


async def test_k_shows_the_key_and_its_file_while_the_server_is_off(app: SageApp) -> None:
    async with app.run_test(size=(140, 40)) as pilot:
        await open_models(app, pilot, 3)
        await pilot.press("k")
        await until(lambda: isinstance(app.screen, ApiKeyModal))
        key, key_file = app.studio.serving.key(), app.services.settings.paths.api_key_file
        assert shown(app, "api-key-value") == key
        assert f'api_key="{key}"' in shown(app, "api-key-hint")
        assert shown(app, "api-key-file") == f"kept in {key_file}"
        assert "s starts it" in shown(app, "api-key-url")
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, ApiKeyModal))
