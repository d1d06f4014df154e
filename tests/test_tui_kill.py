"""The real TUI process, killed (SIGKILL) or hung up (its terminal closed) while a reply streams
and a real job trains.

`python -m sage_tui` runs under a pseudo-terminal with its own SAGE_HOME and the real built-in
model on the transformers engine; the test types into it, waits until the reply has been
streaming for a while (the database says so), then kills it or closes its terminal, and reads
the conversation back with the real store. The job keeps training, and the next launch
re-attaches it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sage_tui.config import Settings
from sage_tui.core.chat import CUT_OFF
from sage_tui.core.conversations import ConversationStore, MessageRecord
from sage_tui.core.store import Store
from sage_tui.core.training.events import read_events
from sage_tui.services import open_services
from tests.conftest import BUILTIN
from tests.support.load import endless_job

READY = f"Ask {BUILTIN} (Enter sends".encode()
PROMPT = "Write a long story about a dragon who learns to bake bread."


class Tui:
    """`python -m sage_tui` on a pseudo-terminal; what it draws is collected in `screen`."""

    def __init__(self, home: Path) -> None:
        env = {**os.environ, "SAGE_HOME": str(home), "SAGE_ENGINE": "transformers"}
        env["TERM"] = "xterm-256color"
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the studio, as a user starts it
            os.execve(sys.executable, [sys.executable, "-m", "sage_tui"], env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.screen = bytearray()
        self.status: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.screen += chunk

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float) -> int:
        """The exit status (as os.waitstatus_to_exitcode gives it) within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            time.sleep(0.1)
        raise AssertionError(f"the studio did not exit within {timeout} s")

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait(10)
        with contextlib.suppress(OSError):  # closed already when the test hung it up
            os.close(self.fd)


@pytest.fixture
def home(tmp_path: Path, builtin_model_dir: Path) -> Path:
    """A studio home with the built-in model in place (linked) and active."""
    settings = Settings.load(home=tmp_path / "home")
    services = open_services(settings.with_changes(default_model=""))
    settings.paths.model_dir(BUILTIN).symlink_to(builtin_model_dir, target_is_directory=True)
    services.registry.pull(BUILTIN)
    services.close()
    return settings.paths.home


def saved_messages(home: Path) -> list[MessageRecord]:
    store = Store(Settings.load(home=home).paths.db)
    try:
        conversations = ConversationStore(store)
        return [m for c in conversations.recent() for m in conversations.messages(c.id)]
    finally:
        store.close()


def until(what: Callable[[], object], timeout: float, tui: Tui, say: str) -> object:
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert tui.status is None and time.monotonic() < deadline, say
        time.sleep(0.2)
    return found


def streaming(tui: Tui, home: Path) -> list[MessageRecord]:
    """Send the prompt once the engine is ready, wait until the reply streaming into the
    database has grown, and return the messages."""
    # The input's placeholder names the model once the engine is ready.
    until(lambda: READY in tui.screen, 120, tui, "the engine did not load")
    tui.type(PROMPT + "\r")
    until(lambda: saved_messages(home), 30, tui, "the message was not sent")

    def draft_grown() -> list[MessageRecord] | None:
        messages = saved_messages(home)
        reply = messages[-1]
        return messages if reply.stats.get(CUT_OFF) and len(reply.content) > 40 else None

    return until(draft_grown, 60, tui, "the reply was not saved as it streamed")


def start_training(home: Path, base: Path) -> str:
    """A real job (the real runner, small steps) started in `home`, as the studio starts one."""
    from sage_tui.core.training.supervisor import Supervisor

    spec = endless_job(base, "ft-survives")
    paths = Settings.load(home=home).paths
    store = Store(paths.db)
    try:
        return Supervisor(store, paths, devices=lambda: []).submit(spec).id
    finally:
        store.close()


def training_steps(home: Path, task_id: str) -> int:
    job_dir = Settings.load(home=home).paths.job_dir(task_id)
    steps = [e.data.get("step", 0) for e in read_events(job_dir)[0] if e.kind == "step"]
    return max(steps, default=0)


def next_launch(home: Path, task_id: str, cancel: bool = False):
    """The job as the next launch of the studio finds it (it re-attaches running jobs)."""
    from sage_tui.core.training.supervisor import Supervisor

    paths = Settings.load(home=home).paths
    store = Store(paths.db)
    try:
        supervisor = Supervisor(store, paths, devices=lambda: [])
        supervisor.reattach()
        job = supervisor.get(task_id)
        if cancel and job.active:
            job = supervisor.cancel(task_id, grace_seconds=5, term_seconds=5)
        return job
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill", "hangup"])
def test_a_studio_killed_or_hung_up_mid_reply_keeps_the_conversation(
    home: Path, builtin_model_dir: Path, how
) -> None:
    task_id = start_training(home, builtin_model_dir)
    tui = Tui(home)
    try:
        before = streaming(tui, home)
        if how == "sigkill":
            os.kill(tui.pid, signal.SIGKILL)
            assert tui.wait(10) == -signal.SIGKILL
        else:  # the terminal goes away (an SSH connection dropped): the kernel sends SIGHUP
            os.close(tui.fd)
            # It quit as ctrl+q does rather than being ended by the signal (its last flush of
            # output to the lost terminal fails: Python exits 120 then).
            assert tui.wait(30) in (0, 120)
    finally:
        tui.close()
        try:
            # Training went on without the studio, and the next launch follows it again.
            steps = training_steps(home, task_id)
            deadline = time.monotonic() + 120
            while training_steps(home, task_id) <= steps:
                assert time.monotonic() < deadline, "the job stopped training with the studio"
                time.sleep(0.5)
            job = next_launch(home, task_id)
            assert job.status == "running" and job.pid, job.error
        finally:
            next_launch(home, task_id, cancel=True)
    user, reply = saved_messages(home)
    assert (user.role, user.content) == ("user", PROMPT)
    assert reply.role == "assistant" and reply.stats[CUT_OFF] is True
    assert reply.content.startswith(before[-1].content)  # nothing that was saved is lost
    if how == "hangup":  # saved at the moment it quit, not only once a second
        assert len(reply.content) >= len(before[-1].content)


def test_a_reply_is_saved_marked_cut_off_until_it_ends(tmp_path: Path) -> None:
    """The session's side of it, on a real database: the reply's row exists from the start."""
    import asyncio
    from types import SimpleNamespace

    from sage_tui.core.chat import ChatSession, describe_stats
    from sage_tui.core.engines.reply import ReplyStats

    stats = ReplyStats(model="m", engine="e", completion_tokens=3, finish_reason="stop")

    async def start_reply(messages, sampling, model=None):
        return SimpleNamespace(stats=stats)

    store = Store(tmp_path / "db")
    conversations = ConversationStore(store)
    session = ChatSession(conversations, start_reply)
    asyncio.run(session.send("hello", sampling=None))
    session.save_draft("Hi th")
    cid = session.conversation_id
    reply = conversations.messages(cid)[-1]
    assert (reply.content, reply.stats[CUT_OFF]) == ("Hi th", True)
    assert describe_stats(reply.stats) == "m · cut off: the studio closed while this reply streamed"
    session.finish("Hi there", stats)
    reply = conversations.messages(cid)[-1]
    assert reply.content == "Hi there" and CUT_OFF not in reply.stats
    assert [m.role for m in conversations.messages(cid)] == ["user", "assistant"]
    # Cut off before its first word: kept in the conversation, not sent back to the model.
    asyncio.run(session.send("again", sampling=None))
    session.cut_off("")
    assert session.open(cid)[-1].stats[CUT_OFF] is True
    assert [m["content"] for m in session.history] == ["hello", "Hi there", "again"]
    store.close()


def test_a_reply_whose_message_cannot_be_saved_is_ended_in_the_engine(tmp_path: Path) -> None:
    """A database locked by another process refuses the user's message: the reply the engine
    had already started is closed (its request ends) rather than left generating unread."""
    import asyncio
    import sqlite3

    from sage_tui.core.chat import ChatSession
    from sage_tui.core.engines.reply import Reply, ReplyStats
    from sage_tui.errors import StoreError

    closed = []

    async def deltas():
        try:
            while True:
                yield None
                await asyncio.sleep(0)
        finally:
            closed.append(True)

    async def start_reply(messages, sampling, model=None):
        stream = deltas()
        await anext(stream)  # the engine has accepted the request and is generating
        return Reply("r1", ReplyStats(model="m", engine="e"), stream)

    store = Store(tmp_path / "db", busy_timeout=0.2)
    holder = sqlite3.connect(tmp_path / "db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def send() -> None:
        with pytest.raises(StoreError, match="is locked by another process"):
            await ChatSession(ConversationStore(store), start_reply).send("hi", None)
        assert closed == [True]  # now, not when the event loop is torn down

    try:
        asyncio.run(send())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.close()
