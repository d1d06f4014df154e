"""No database write runs on the event loop: the App driven through what users do.

SQLite's trace hook on the studio's own connection records the thread of every statement
while the user chats, switches the model, starts a job, uses it as the backend and deletes
it. A write on the loop thread would freeze the screen for as long as the disk or another
process's lock takes (up to the busy timeout), so none may run there.
"""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

from sage_tui.ui.app import SageApp
from sage_tui.ui.modals.use_backend import UseBackendModal
from tests.conftest import BUILTIN
from tests.support.fake_engine import adapter_folder
from tests.support.waiting import until
from tests.test_chat_screen import ask, messages
from tests.test_finetune_screen import DATASET, fill, make_app, open_finetune

__all__ = ["make_app"]  # the fixture, imported for pytest

WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|BEGIN|COMMIT|PRAGMA\s+\w+\s*=)", re.I)


async def test_no_database_write_runs_on_the_event_loop(make_app, tmp_path: Path) -> None:
    app: SageApp = make_app()
    loop_thread = threading.get_ident()
    writes: list[tuple[int, str]] = []

    def traced(statement: str) -> None:
        if WRITE.match(statement):
            writes.append((threading.get_ident(), " ".join(statement.split())[:80]))

    app.services.store._db.set_trace_callback(traced)
    adapter = adapter_folder(tmp_path / "adapter")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.engine.ready)
        await ask(app, pilot, "What is the capital of France?")  # chat
        await until(lambda: app.screen.reply is None and len(messages(app)) == 2)

        await pilot.press("f2")  # switch the model from the Models screen
        tree = app.screen.query_one("#models-tree")
        await until(lambda: len(tree.root.children) > 0)
        tree.focus()
        await pilot.press("enter")
        await until(lambda: any("Chatting with" in n.message for n in app._notifications))

        await open_finetune(app, pilot)  # start a job
        fill(app, dataset=DATASET, task="ft-loop")
        await pilot.press("ctrl+s")
        await until(lambda: app.jobs and app.jobs[0].status == "completed")
        for file in adapter.iterdir():
            if file.is_file():
                shutil.copy(file, app.jobs[0].output_dir / file.name)
        app.screen.query_one("#finetune-jobs").focus()
        await pilot.press("u")  # use it as the backend
        await until(lambda: isinstance(app.screen, UseBackendModal))
        await pilot.press("enter")
        await until(lambda: app.active_model == "sage-finetuned-ft-loop" and app.engine.ready)
        await pilot.press("d")  # delete it
        await until(lambda: app.jobs == [])

    on_loop = [statement for thread, statement in writes if thread == loop_thread]
    assert on_loop == [], on_loop
    written = " ".join(statement for _, statement in writes)
    for table in ("messages", "settings", "models", "jobs"):
        assert f"INTO {table}" in written or f"UPDATE {table}" in written, table
    assert app.services.registry.active_name == "sage-finetuned-ft-loop" != BUILTIN
