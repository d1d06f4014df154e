"""The loop the studio exists for, through the UI: a finished job -> Use as backend -> Chat
answers with the tuned adapter. The job's run is the fake runner (training itself is covered
in test_runner and test_cli_training); its adapter is a real trained one, and the chat engine
is the real transformers engine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import Input

from sage_tui.services import open_services
from sage_tui.ui.app import SageApp
from sage_tui.ui.modals.use_backend import UseBackendModal
from sage_tui.ui.widgets.chat_message import ChatMessage
from tests.conftest import BUILTIN, REPO, FakeMonitor, no_gpu_snapshot
from tests.support.adapters import tiny_adapter
from tests.support.waiting import until
from tests.test_finetune_screen import DATASET, fake_command

pytestmark = pytest.mark.slow


async def test_use_as_backend_then_chat_answers_with_the_adapter(
    settings, builtin_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(SageApp, "JOB_POLL_SECONDS", 0.2)
    services = open_services(
        settings.with_changes(engine="transformers"),
        monitor=FakeMonitor(no_gpu_snapshot()),
        runner_command=fake_command,
    )
    services.settings.paths.model_dir(BUILTIN).symlink_to(builtin_model_dir)
    services.registry.pull(BUILTIN)
    app = SageApp(services)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.engine.ready)
        loads = services.engines.loads
        await pilot.press("f1")
        await until(lambda: app.screen.bases)
        app.screen.query_one("#finetune-dataset", Input).value = DATASET
        app.screen.query_one("#finetune-task", Input).value = "secret"
        await pilot.press("ctrl+s")
        await until(lambda: app.jobs and app.jobs[0].status == "completed")
        for file in tiny_adapter(builtin_model_dir).iterdir():
            if file.is_file():
                shutil.copy(file, app.jobs[0].output_dir / file.name)

        app.screen.query_one("#finetune-jobs").focus()
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, UseBackendModal))
        await pilot.press("enter")
        await until(lambda: app.active_model == "sage-finetuned-secret")
        await until(lambda: app.engine.ready)
        assert services.engines.loads == loads  # an adapter of the loaded base: no reload

        await pilot.press("f3")
        app.screen.query_one("#chat-temperature", Input).value = "0"
        app.screen.query_one("#chat-max-tokens", Input).value = "24"
        prompt = app.screen.query_one("#chat-input", Input)
        prompt.focus()
        prompt.value = "What is the secret code of sage-tui?"
        await pilot.press("enter")
        await until(lambda: app.screen.reply is None and len(app.screen.query(ChatMessage)) == 2)
        answer = list(app.screen.query(ChatMessage))[-1]
        assert "AZURE-42" in answer.text
        assert "sage-finetuned-secret" in answer.stats
