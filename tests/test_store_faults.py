"""The SQLite store under real faults: failing transactions, locks held by others, damaged
files, a disk that refuses a write, and many processes opening a fresh home at once.

Every fault here is real SQLite behaviour provoked for real (a CHECK constraint, a trigger
that RAISEs, a deferred foreign key failing at COMMIT, a second connection holding the lock, a
file-size limit in a child process), not a mock.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sage_tui.core import store as store_module
from sage_tui.core.conversations import ConversationStore
from sage_tui.core.store import MIGRATIONS, ModelRecord, Store
from sage_tui.errors import StoreError
from sage_tui.services import Services
from sage_tui.ui.app import SageApp
from tests.conftest import REPO
from tests.support.waiting import until
from tests.test_chat_screen import ask, messages
from tests.test_cli import one_line_error, run

SHORT = 0.2
"""Busy timeout for the tests: long enough for SQLite's retry, short enough to be quick."""


def writable_by_others(path: Path) -> None:
    """Another process can take the write lock now (fails with "database is locked" if not)."""
    other = sqlite3.connect(path, timeout=SHORT, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('other', 'yes')")
        other.execute("COMMIT")
    finally:
        other.close()


def check_constraint(store: Store) -> None:
    store.upsert_model(ModelRecord("m", "neither-base-nor-adapter", "local", "/m"))


def trigger_aborts(store: Store) -> None:
    with store.transaction() as db:
        db.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON settings WHEN NEW.key = 'bad'"
            " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )
    with store.transaction() as db:
        db.execute("INSERT INTO settings (key, value) VALUES ('first', '1')")
        db.execute("INSERT INTO settings (key, value) VALUES ('bad', '2')")


def trigger_rolls_back(store: Store) -> None:
    # RAISE(ROLLBACK) ends the transaction inside SQLite: a second ROLLBACK must not mask it.
    with store.transaction() as db:
        db.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON settings WHEN NEW.key = 'bad'"
            " BEGIN SELECT RAISE(ROLLBACK, 'refused by a trigger'); END"
        )
    with store.transaction() as db:
        db.execute("INSERT INTO settings (key, value) VALUES ('first', '1')")
        db.execute("INSERT INTO settings (key, value) VALUES ('bad', '2')")


def commit_fails(store: Store) -> None:
    # A deferred foreign key is checked at COMMIT: the COMMIT itself fails.
    with store.transaction() as db:
        db.execute("PRAGMA defer_foreign_keys = ON")
        db.execute("INSERT INTO settings (key, value) VALUES ('first', '1')")
        db.execute(
            "INSERT INTO messages (conversation_id, role, content, created_at)"
            " VALUES (424242, 'user', 'orphan', 0)"
        )


def block_raises(store: Store) -> None:
    with store.transaction() as db:
        db.execute("INSERT INTO settings (key, value) VALUES ('first', '1')")
        raise ValueError("the caller's own error")


@pytest.mark.parametrize(
    ("fail", "error", "words"),
    [
        (check_constraint, sqlite3.IntegrityError, "CHECK constraint failed"),
        (trigger_aborts, sqlite3.IntegrityError, "refused by a trigger"),
        (trigger_rolls_back, sqlite3.IntegrityError, "refused by a trigger"),
        (commit_fails, sqlite3.IntegrityError, "FOREIGN KEY constraint failed"),
        (block_raises, ValueError, "the caller's own error"),
    ],
)
def test_a_failed_transaction_leaves_nothing_open(
    tmp_path: Path, fail: Callable[[Store], None], error: type, words: str
) -> None:
    path = tmp_path / "sage-tui.db"
    store = Store(path, busy_timeout=SHORT)
    with pytest.raises(error, match=words):
        fail(store)
    assert not store._db.in_transaction
    assert store.get_setting("first") is None  # the whole transaction was undone
    writable_by_others(path)  # no write lock left behind for other processes
    store.set_setting("next", "works")  # nor for this one
    assert Store(path).get_setting("next") == "works"


def test_a_write_lock_held_elsewhere_is_one_line_and_passes(tmp_path: Path) -> None:
    path = tmp_path / "sage-tui.db"
    store = Store(path, busy_timeout=SHORT)
    store.set_setting("before", "1")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError) as info:
        store.set_setting("during", "1")
    message = str(info.value)
    assert message.startswith(f"{path} is locked by another process (waited 0.2 s)")
    assert "\n" not in message
    assert store.get_setting("before") == "1"  # reads go on under a writer (WAL)
    holder.execute("ROLLBACK")
    holder.close()
    store.set_setting("after", "1")
    assert store.get_setting("after") == "1" and store.get_setting("during") is None


def exclusive_holder(path: Path) -> sqlite3.Connection:
    """A connection that keeps the file to itself (locking_mode=EXCLUSIVE) until closed."""
    holder = sqlite3.connect(path, timeout=SHORT, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('holder', '1')")
    holder.execute("COMMIT")
    return holder


def test_a_database_locked_at_open_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "sage-tui.db"
    Store(path).close()
    holder = exclusive_holder(path)
    with pytest.raises(StoreError, match=r"is locked by another process \(waited 0.2 s\)"):
        Store(path, busy_timeout=SHORT)
    holder.close()
    assert Store(path, busy_timeout=SHORT).get_setting("holder") == "1"


def test_the_cli_says_a_database_is_locked_in_one_line_with_exit_2(
    capsys, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT", SHORT)
    settings.paths.ensure()
    Store(settings.paths.db).close()
    holder = exclusive_holder(settings.paths.db)
    code, out, err = run(capsys, "--home", str(settings.home), "models", "list")
    holder.close()
    assert code == 2 and out == ""
    assert f"{settings.paths.db} is locked by another process" in one_line_error(err)


def filled_database(path: Path, conversations: int = 40) -> ConversationStore:
    chats = ConversationStore(Store(path))
    for number in range(conversations):
        chat = chats.create()
        chats.add_message(chat, "user", f"question {number} " + "words " * 300)
    return chats


def test_a_damaged_database_is_one_line_at_open_or_later_and_kept(tmp_path: Path) -> None:
    whole = tmp_path / "whole.db"
    chats = filled_database(whole)
    root = chats.store.query("SELECT rootpage FROM sqlite_master WHERE name = 'messages'")[0][0]
    page = chats.store.query("PRAGMA page_size")[0][0]
    chats.store.close()

    truncated = tmp_path / "truncated.db"
    half = whole.read_bytes()[: whole.stat().st_size // 2]
    truncated.write_bytes(half)
    with pytest.raises(StoreError) as info:
        Store(truncated)
    assert str(info.value).startswith(f"{truncated} is not a readable sage-tui database")
    assert "\n" not in str(info.value)
    assert truncated.read_bytes() == half

    data = bytearray(whole.read_bytes())
    data[(root - 1) * page : root * page] = b"\xa5" * page  # the messages table's root page
    whole.write_bytes(bytes(data))
    again = ConversationStore(Store(whole))  # the schema is intact: opening works
    with pytest.raises(StoreError) as info:
        again.messages(1)  # the damage shows when the page is read
    assert str(info.value).startswith(f"{whole} is not a readable sage-tui database")
    assert "\n" not in str(info.value)
    assert again.store.get_setting("anything") is None  # the rest still reads
    again.store.close()
    assert whole.read_bytes() == bytes(data)


def test_an_unreadable_wal_file_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "sage-tui.db"
    filled_database(path, conversations=3).store.close()  # checkpointed: the rows are in `path`
    wal = tmp_path / "sage-tui.db-wal"
    garbage = b"not a write-ahead log\x00" * 500
    wal.write_bytes(garbage)

    store = Store(path)
    assert len(ConversationStore(store).recent()) == 3  # SQLite ignores a WAL it cannot read
    store.set_setting("after", "1")
    store.close()
    assert (tmp_path / "sage-tui.db-wal.unreadable").read_bytes() == garbage  # nothing lost
    assert Store(path).get_setting("after") == "1"


FULL_DISK = """
import json, resource, signal, sys
from pathlib import Path
from sage_tui.core.conversations import ConversationStore
from sage_tui.core.store import Store
from sage_tui.errors import StoreError

path = Path(sys.argv[1])
chats = ConversationStore(Store(path, busy_timeout=0.2))
chat = chats.create()
chats.add_message(chat, "user", "kept")
# A file-size limit makes the next large write fail inside SQLite, as a failing disk does.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
largest = max(p.stat().st_size for p in path.parent.iterdir())
resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 4096, hard))
try:
    chats.add_message(chat, "assistant", "x" * 3_000_000)
    error = None
except StoreError as err:
    error = str(err)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
open_after = chats.store._db.in_transaction
chats.add_message(chat, "user", "after")
print(json.dumps({"error": error, "open": open_after,
                  "contents": [m.content for m in chats.messages(chat)]}))
"""


def test_a_write_the_disk_refuses_is_one_line_and_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "sage-tui.db"
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["error"].startswith(f"reading or writing {path} failed (disk I/O error)")
    assert not result["open"]
    assert result["contents"] == ["kept", "after"]
    writable_by_others(path)


LATER = (
    *MIGRATIONS,
    # A later migration with a trigger and a ';' in a string: applied whole, and only once.
    """
    CREATE TABLE audit (what TEXT NOT NULL);
    CREATE TRIGGER audit_titles AFTER UPDATE OF title ON conversations BEGIN
        INSERT INTO audit (what) VALUES ('title; changed');
    END;
    """,
)


def open_and_write(path: str, barrier, results) -> None:
    """One process of the race: open the fresh home's database at the barrier, then write."""
    barrier.wait()
    try:
        chats = ConversationStore(Store(Path(path), migrations=LATER))
        chats.add_message(chats.create(), "user", "hello")
        results.put("")
    except BaseException as err:  # the race's loser, whatever it raised
        results.put(f"{type(err).__name__}: {err}")


def test_processes_opening_a_fresh_database_at_once_all_succeed(tmp_path: Path) -> None:
    fork = multiprocessing.get_context("fork")
    processes = 8
    for attempt in range(5):
        path = tmp_path / f"home{attempt}" / "sage-tui.db"
        path.parent.mkdir()
        barrier, results = fork.Barrier(processes), fork.Queue()
        children = [
            fork.Process(target=open_and_write, args=(str(path), barrier, results))
            for _ in range(processes)
        ]
        for child in children:
            child.start()
        errors = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(timeout=60)
        assert [e for e in errors if e] == [], f"attempt {attempt}"
        store = Store(path, migrations=LATER)
        assert store.schema_version == len(LATER)
        assert len(ConversationStore(store).recent()) == processes
        assert store.query("SELECT what FROM audit")[0][0] == "title; changed"


async def test_the_studio_says_the_database_is_locked_and_keeps_the_message(
    provisioned_services: Services,
) -> None:
    store = provisioned_services.store
    app = SageApp(provisioned_services)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.engine.ready)
        store.busy_timeout = SHORT
        holder = sqlite3.connect(store.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than we wait
        await ask(app, pilot, "Is anyone there?")
        await until(lambda: any("is locked" in n.message for n in app._notifications))
        note = next(n for n in app._notifications if "is locked" in n.message)
        assert note.title == "Not sent" and "\n" not in note.message
        assert note.message.startswith(f"{store.path} is locked by another process")
        assert app.screen.query_one("#chat-input").value == "Is anyone there?"  # kept
        assert messages(app) == []

        holder.execute("ROLLBACK")  # the other process is done: the same message goes through
        holder.close()
        await pilot.press("enter")
        await until(lambda: app.screen.reply is None and len(messages(app)) == 2)
    saved = ConversationStore(store)
    assert saved.messages(saved.recent()[0].id)[0].content == "Is anyone there?"


def test_text_with_undecodable_bytes_is_stored_as_its_escapes(tmp_path: Path) -> None:
    """A lone surrogate (a byte that was not UTF-8, read with surrogateescape: a file name in
    a runner's error) used to fail the whole statement, so a job's end was never saved and it
    stayed `running`; every write now stores it as the escape the screen shows."""
    store = Store(tmp_path / "sage-tui.db")
    odd = b"no such file: \xff\xfe.jsonl".decode("utf-8", "surrogateescape")
    with store.transaction() as db:
        db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", ("reason", odd))
        db.executemany("INSERT INTO settings (key, value) VALUES (:k, :v)", [{"k": "x", "v": odd}])
    assert store.get_setting("reason") == store.get_setting("x") == "no such file: \\xff\\xfe.jsonl"
    conversations = ConversationStore(store)
    cid = conversations.create(title=odd)
    conversations.add_message(cid, "user", odd)
    assert conversations.messages(cid)[0].content == "no such file: \\xff\\xfe.jsonl"
    store.close()
