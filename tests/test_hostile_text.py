"""Hostile text through every widget and CLI path: shown as text, never as markup, and no
terminal control from it reaches the terminal.

The TUI checks read what the terminal would get: the full frame Textual writes for the screen
(`render_full_update().render_segments`), minus Textual's own colour and cursor sequences, must
hold no control character, and the text each widget shows must be the hostile string made
visible (`␛[2J`, `\\x9b31m`, `[/INST]` as typed). Textual 8.2.8 itself passes ESC, C1, bidi
overrides and lone surrogates straight through. One App per group of widgets keeps the file
fast; every group runs every hostile string. SQLite holds UTF-8 text only: a lone surrogate
(an undecodable byte) is saved as the escape shown for it (`\\xff`, `core.safe_text.storable`);
the model-record paths skip it, since nothing could have registered such a name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import re
import sys
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Input, ListView, Markdown
from textual.widgets._toast import Toast
from textual.widgets.markdown import MarkdownBlock

from sage_tui import cli
from sage_tui.core.conversations import ConversationStore
from sage_tui.core.safe_text import visible
from sage_tui.core.store import ModelRecord
from sage_tui.core.training.supervisor import Supervisor
from sage_tui.services import Services
from sage_tui.studio import Studio, state
from sage_tui.studio.jobs import JobRequest
from sage_tui.ui.app import SageApp
from sage_tui.ui.messages import JobsUpdated, StudioEventArrived
from sage_tui.ui.modals.use_backend import UseBackendModal
from sage_tui.ui.widgets.job_table import JobTable
from tests.conftest import BUILTIN, REPO
from tests.support.fake_engine import FakeEngines
from tests.support.waiting import until
from tests.test_chat_screen import ask, messages

HOSTILE = {
    "unbalanced close tag": "what does [/INST] mean?",
    "open tag": "[bold]x",
    "bare close tag": "[/]",
    "OSC 52 clipboard write": "\x1b]52;c;aGVsbG8=\x1b\\",
    "OSC 8 link": "\x1b]8;;http://evil\x1b\\x\x1b]8;;\x1b\\",
    "CSI clear screen": "\x1b[2J",
    "C1 CSI": "\x9b31m",
    "right-to-left override": "abc\u202eexe",
    "invalid UTF-8": b"\xff\xfe".decode("utf-8", errors="surrogateescape"),
    "NUL": "a\x00b",
    "carriage return": "safe\rEVIL",
}
CASES = list(HOSTILE.items())
CONTROLS = [(case, text) for case, text in CASES if visible(text) != text]
"""The CLI never parses markup: its paths run the strings that hold terminal controls."""
FACTS = REPO / "sample_data" / "sage_tui_facts.jsonl"
# What Textual itself writes around the text of a frame: colours (SGR) and cursor moves.
OWN_SEQUENCES = re.compile(r"\x1b\[[0-9;:]*[mH]")
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def marked(index: int, text: str) -> str:
    """The hostile text between two markers, so its place on screen can be found."""
    return f"Q{index} {text} Z{index}"


def storable(text: str) -> bool:
    """Whether SQLite can hold `text` (a lone surrogate has no UTF-8 form)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def compact(text: str) -> str:
    """Whitespace removed: wrapping and padding move it around."""
    return re.sub(r"\s", "", text)


def frame(app: SageApp) -> tuple[str, list[Strip]]:
    """What a full repaint writes to the terminal, and the lines it is made of."""
    update = app.screen._compositor.render_full_update()
    return update.render_segments(app.console), [Strip.join(line) for line in update.strips]


def shown_in(app: SageApp, widget: Widget) -> str:
    """The text the terminal shows inside `widget`'s region (whitespace removed)."""
    region = widget.region
    _, lines = frame(app)
    rows = lines[region.y : region.bottom]
    return compact("".join(line.crop(region.x, region.right).text for line in rows))


def assert_safe(
    app: SageApp, widget: Widget, text: str, case: str, shown: int | None = None
) -> None:
    """No control character reaches the terminal, and `text` shows, made visible (its first
    `shown` characters, for a one-line widget that cuts long text)."""
    output, lines = frame(app)
    written = OWN_SEQUENCES.sub("", output)
    assert CONTROL.search(written) is None, f"{case}: {CONTROL.search(written)!r} written"
    assert CONTROL.search("".join(line.text for line in lines)) is None, case
    written.encode("utf-8")  # what a UTF-8 terminal gets: no lone surrogate left to fail on
    expected = compact(visible(text))[:shown]
    assert expected in shown_in(app, widget), f"{case}: {visible(text)!r} not shown"


# -- the chat ---------------------------------------------------------------------------------


async def test_chat_reply_user_message_and_titles(
    provisioned_services: Services, engines: FakeEngines
) -> None:
    app = SageApp(provisioned_services)
    async with app.run_test(size=(160, 60), notifications=True) as pilot:
        await until(lambda: app.engine.ready)
        for index, (case, text) in enumerate(CASES):
            engines.script.reply = f"R{index} {text} Z{index}"  # streamed a word at a time
            await pilot.press("ctrl+n")
            await pilot.pause()
            await ask(app, pilot, marked(index, text))
            await until(lambda: app.screen.reply is None and len(messages(app)) == 2)
            await pilot.pause()
            user, answer = messages(app)
            assert answer.text == engines.script.reply, case  # kept as written (saved, copied)
            assert_safe(app, user, marked(index, text), f"user message, {case}")
            assert_safe(app, answer, engines.script.reply, f"reply, {case}")
        await pilot.press("ctrl+o")
        listing = app.screen.query_one("#chat-conversations", ListView)
        # Every message is saved: undecodable bytes as the escapes shown for them (`\\xff`).
        saved = list(enumerate(CASES))
        await until(lambda: len(listing.children) == len(saved))
        await pilot.pause()
        records = ConversationStore(app.services.store).recent()
        for item, record, (index, (case, _)) in zip(
            listing.children, records, reversed(saved), strict=True
        ):
            # The title is the first message as the store keeps it (whitespace, \r too, folded).
            assert record.title.startswith(f"Q{index} ")
            assert_safe(app, item, record.title, f"conversation title, {case}", shown=20)


async def test_a_link_in_a_reply_opens_only_when_asked(
    provisioned_services: Services, engines: FakeEngines, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(SageApp, "open_url", lambda self, url, **_: opened.append(url))
    engines.script.reply = "see [the docs](https://example.org/d) or [this](file:///etc/passwd)"
    app = SageApp(provisioned_services)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await until(lambda: app.engine.ready)
        await ask(app, pilot, "links please")
        await until(lambda: app.screen.reply is None and len(messages(app)) == 2)
        body = messages(app)[1].body
        for href in ("https://example.org/d", "file:///etc/passwd"):
            before = list(opened)
            await body.query(MarkdownBlock).first().action_link(href)  # what a click does
            await pilot.pause()
            assert opened == before and app.screen.link == href  # shown, not opened
            assert any(href in n.message for n in app._notifications)
            await pilot.press("ctrl+l")
            await pilot.pause()
        assert opened == ["https://example.org/d"]  # the file: link was shown, not opened
        assert any("not a web link" in n.message for n in app._notifications)
        assert isinstance(body, Markdown)


# -- the status line, the engine notice, notifications, the modal and the Models screen -------


async def test_status_line_engine_errors_notifications_modal_and_models(
    provisioned_services: Services, engines: FakeEngines, tmp_path: Path
) -> None:
    store = provisioned_services.store
    stored = [(index, case, text) for index, (case, text) in enumerate(CASES) if storable(text)]
    for index, _, text in stored:
        # As another tool (or an older version) might have written the registry.
        folder = tmp_path / f"model-{index}"
        folder.mkdir()
        name = marked(index, text)
        store.upsert_model(ModelRecord(name, "base", "local", f"{folder}/{text}", None))
    engines.script.load_error = RuntimeError("not yet")  # every load fails: each reload tries
    app = SageApp(provisioned_services)
    async with app.run_test(size=(200, 60), notifications=True) as pilot:
        await until(lambda: app.engine.state is state.EngineState.FAILED)
        await pilot.press("f2")
        tree = app.screen.query_one("#models-tree")
        await until(lambda: len(tree.root.children) == len(stored) + 1)
        await pilot.pause()
        for index, case, text in stored:
            line = next(n.line for n in tree.root.children if n.data == marked(index, text))
            tree.cursor_line = line
            await pilot.pause()
            assert_safe(app, tree, marked(index, text), f"models tree, {case}")
        await pilot.press("f3")
        status = app.screen.query_one(".status-model")
        for index, (case, text) in enumerate(CASES):
            name = marked(index, text)
            app.post_message(StudioEventArrived(state.ActiveModelChanged(name)))
            engines.script.load_error = RuntimeError(f"E{index} {text} Z{index}")
            app.reload_engine()
            await until(lambda index=index: f"E{index} " in (app.engine.error or ""))
            await pilot.pause()
            assert_safe(app, status, name, f"status line model name, {case}")
            notice = app.screen.query_one("#chat-engine")
            # As describe_error words it (its first line: a "\r" ends it).
            assert_safe(app, notice, app.engine.error, f"engine error, {case}")
            app.clear_notifications()
            app.notify(f"N{index} {text} Z{index}", title=f"T{index} {text}", markup=True)
            await until(lambda: app.screen.query(Toast))
            await pilot.pause()
            toast = app.screen.query(Toast).last()
            assert_safe(app, toast, f"N{index} {text} Z{index}", f"notification, {case}")
            assert_safe(app, toast, f"T{index} {text}", f"notification title, {case}")
            app.clear_notifications()
            app.push_screen(UseBackendModal(name))
            await pilot.pause()
            assert_safe(
                app, app.screen.query_one("#use-backend-model"), name, f"use-as-backend, {case}"
            )
            app.pop_screen()
            await pilot.pause()


# -- the Finetune screen: jobs from a runner that fails with hostile words ---------------------

RUNNER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from sage_tui.core.training.events import EventWriter
job, text = Path(sys.argv[1]), bytes.fromhex(sys.argv[2])
sys.stdout.buffer.write(b"L " + text + b" Z\\n")
sys.stdout.flush()
events = EventWriter(job)
events.write("started")
events.write("failed", reason="E " + text.decode("utf-8", "replace") + " Z")
sys.exit(1)
"""


@pytest.fixture
def hostile_jobs(provisioned_services: Services) -> Services:
    """Services whose runner prints the job's hostile text to train.log and fails with it."""
    by_job = {f"ft-hostile-{index}": text for index, (_, text) in enumerate(CASES)}

    def command(job_dir: Path, resume: bool) -> list[str]:
        raw = by_job[job_dir.name].encode("utf-8", "surrogateescape")
        return [sys.executable, "-c", RUNNER, str(job_dir), raw.hex(), str(REPO)]

    provisioned_services.supervisor = Supervisor(
        provisioned_services.store,
        provisioned_services.settings.paths,
        runner_command=command,
        devices=lambda: [],
        jobs_per_device=len(CASES),
    )
    return provisioned_services


async def test_finetune_jobs_logs_and_dataset_report(
    hostile_jobs: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SageApp, "JOB_POLL_SECONDS", 0.2)
    app = SageApp(hostile_jobs)
    async with app.run_test(size=(200, 60), notifications=True) as pilot:
        await pilot.press("f1")
        await until(lambda: app.screen.bases)
        for index, _ in enumerate(CASES):
            request = JobRequest(base=BUILTIN, dataset=str(FACTS), task_id=f"ft-hostile-{index}")
            app.screen.submit_job(request)
        await until(lambda: len(app.jobs) == len(CASES) and not any(j.active for j in app.jobs))
        table = app.screen.query_one(JobTable)
        summary = app.screen.query_one("#finetune-job-summary")
        log = app.screen.query_one("#finetune-log")
        for index, (case, text) in enumerate(CASES):
            table.move_cursor(row=table.get_row_index(f"ft-hostile-{index}"))
            await until(lambda index=index: f"ft-hostile-{index}:" in str(summary.render()))
            await until(lambda: "L " in str(log.render()))
            app.clear_notifications()  # the jobs' "failed" toasts lie over the log
            await pilot.pause()
            # Undecodable bytes arrive as U+FFFD (the runner words its reasons in text; the
            # log tail is decoded with errors="replace", its \r read as line ends).
            readable = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            assert_safe(app, summary, f"E {readable} Z", f"job error, {case}")
            assert_safe(app, log, f"L {readable} Z".replace("\r", "\n"), f"log tail, {case}")

        # Jobs as a database written elsewhere could list them: ids are data too. The poll is
        # paused so that it does not put the real jobs back meanwhile.
        poll = next(timer for timer in app._timers if timer.name == "poll jobs")
        poll.pause()
        await until(lambda: not app._polling_jobs)
        await pilot.pause()
        real = app.jobs[0]
        odd = [
            dataclasses.replace(real, id=marked(index, text))
            for index, (_, text) in enumerate(CASES)
        ]
        app.screen.post_message(JobsUpdated(odd))
        await pilot.pause()
        for index, (case, text) in enumerate(CASES):
            table.move_cursor(row=table.get_row_index(marked(index, text)))
            await pilot.pause()
            assert_safe(app, table, marked(index, text), f"job table, {case}")
        poll.resume()

        dataset = app.screen.query_one("#finetune-dataset", Input)
        report = app.screen.query_one("#finetune-dataset-report")
        for index, (case, text) in enumerate(CASES):
            dataset.value = f"missing/D{index} {text} Z{index}.jsonl"
            app.screen.query_one("#finetune-check").press()
            await until(lambda: "cannot train" in str(report.render()))
            await pilot.pause()
            shown = f"D{index} {text} Z{index}.jsonl"
            assert_safe(app, report, shown, f"dataset report, {case}")


# -- the CLI ----------------------------------------------------------------------------------


@contextmanager
def terminal_on(fd: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """File descriptor `fd` (1 or 2) and its sys stream on a pseudo-terminal; yields the
    bytes the terminal received (filled in on exit)."""
    leader, follower = pty.openpty()
    tty.setraw(follower)  # no "\n" -> "\r\n": the bytes as written
    saved = os.dup(fd)
    received: list[bytes] = []
    name = "stdout" if fd == 1 else "stderr"
    try:
        os.dup2(follower, fd)
        stream = open(fd, "w", encoding="utf-8", closefd=False)  # noqa: SIM115  monkeypatch holds it
        monkeypatch.setattr(sys, name, stream)
        yield received
        getattr(sys, name).flush()
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(follower)
        chunks = []
        os.set_blocking(leader, False)
        while True:
            try:
                chunk = os.read(leader, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        received.append(b"".join(chunks))


@contextmanager
def piped_on(fd: int, path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """File descriptor `fd` and its sys stream into the file `path` (not a terminal)."""
    saved = os.dup(fd)
    name = "stdout" if fd == 1 else "stderr"
    with open(path, "wb") as target:
        try:
            os.dup2(target.fileno(), fd)
            stream = open(fd, "w", encoding="utf-8", closefd=False)  # noqa: SIM115  as above
            monkeypatch.setattr(sys, name, stream)
            yield
            getattr(sys, name).flush()
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def assert_terminal_safe(received: bytes, text: str, case: str) -> None:
    shown = received.decode("utf-8")  # strict: nothing undecodable reached the terminal
    assert CONTROL.search(shown) is None, f"{case}: {CONTROL.search(shown)!r} reached it"
    assert visible(text) in shown, f"{case}: {visible(text)!r} not in {shown!r}"


@pytest.fixture
def cli_services(provisioned_services: Services, engines: FakeEngines, monkeypatch):
    """`cli.main` over the scripted engine (the services it opens are built as the fixture's)."""
    import sage_tui.services

    real = sage_tui.services.open_services
    monkeypatch.setattr(
        sage_tui.services,
        "open_services",
        lambda settings, **_: real(settings, engine_factory=engines, devices=lambda: []),
    )
    return provisioned_services


@pytest.mark.parametrize(("case", "text"), CONTROLS, ids=[case for case, _ in CONTROLS])
def test_cli_ask_on_a_terminal_and_piped(
    case: str, text: str, cli_services: Services, engines: FakeEngines, monkeypatch, tmp_path
) -> None:
    home = str(cli_services.settings.home)
    engines.script.reply = f"R {text} Z"
    with terminal_on(1, monkeypatch) as received:
        assert cli.main(["--home", home, "ask", "hi", "--temperature", "0"]) == 0
    assert_terminal_safe(received[0], engines.script.reply, case)
    piped = tmp_path / "answer.txt"
    with piped_on(1, piped, monkeypatch):
        assert cli.main(["--home", home, "ask", "hi", "--temperature", "0"]) == 0
    # The model's text as it came; a lone surrogate has no UTF-8 form and goes out as "?".
    assert piped.read_bytes() == f"R {text} Z\n".encode("utf-8", errors="replace")


@pytest.mark.parametrize(("case", "text"), CONTROLS, ids=[case for case, _ in CONTROLS])
def test_cli_jobs_show_logs_and_dataset_errors(
    case: str, text: str, hostile_jobs: Services, monkeypatch, tmp_path
) -> None:
    home = str(hostile_jobs.settings.home)
    index = list(HOSTILE).index(case)
    job_id = f"ft-hostile-{index}"
    supervisor = hostile_jobs.supervisor
    Studio(hostile_jobs).jobs.submit(JobRequest(base=BUILTIN, dataset=str(FACTS), task_id=job_id))
    for _ in range(200):
        supervisor.poll()
        if not supervisor.get(job_id).active:
            break
        time.sleep(0.05)
    raw_log = supervisor.get(job_id).folder.log_file.read_bytes()
    assert f"L {text} Z".encode("utf-8", "surrogateescape") in raw_log

    with terminal_on(1, monkeypatch) as shown:
        assert cli.main(["--home", home, "jobs", "show", job_id]) == 0
    readable = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    assert_terminal_safe(shown[0], f"E {readable} Z", f"jobs show, {case}")
    with terminal_on(1, monkeypatch) as logged:
        assert cli.main(["--home", home, "jobs", "logs", job_id]) == 0
    assert_terminal_safe(logged[0], f"L {text} Z", f"jobs logs, {case}")
    piped = tmp_path / "log.txt"
    with piped_on(1, piped, monkeypatch):
        assert cli.main(["--home", home, "jobs", "logs", job_id]) == 0
    assert piped.read_bytes() == raw_log  # the log's own bytes, undecodable ones too

    data = tmp_path / "keys.jsonl"
    data.write_text(json.dumps({f"K {text} Z": "x"}) + "\n")  # \u escapes: valid JSON
    argv = ["--home", home, "finetune", "--base", BUILTIN, "--data", str(data)]
    with terminal_on(2, monkeypatch) as error:
        assert cli.main(argv) == 2
    assert_terminal_safe(error[0], f"K {text} Z", f"dataset key error, {case}")
    assert error[0].count(b"\n") == 1 and b"sage-tui: error:" in error[0]


async def test_a_control_that_reaches_a_widget_another_way_is_dropped(
    services: Services,
) -> None:
    """The line filter: an Input shows its value as it is (a saved system prompt, editable, so
    not rewritten), yet no control from it reaches the terminal and nothing after it moves."""
    app = SageApp(services)
    async with app.run_test(size=(120, 30)) as pilot:
        box = app.screen.query_one("#chat-system", Input)
        for case, text in CONTROLS:
            box.value = f"S {text} END"
            await pilot.pause()
            output, _ = frame(app)
            written = OWN_SEQUENCES.sub("", output)
            assert CONTROL.search(written) is None, f"{case}: {CONTROL.search(written)!r}"
            assert box.value == f"S {text} END"  # the prompt itself is kept as typed
            assert "END" in shown_in(app, box)
