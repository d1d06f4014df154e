"""The SQLite connection under the store: opening a file safely, and SQLite's faults in words.

Several processes open one file (the TUI, CLI commands, the queue keeper, often at the same
moment on a fresh home), so opening is race-safe: the switch to WAL waits on the busy timeout
like any other lock, and each migration runs under `BEGIN IMMEDIATE` with the version read
inside it, so of two processes that both found version 0 the second sees the first's work and
skips it. Faults of the file or the machine (locked, corrupt, full, unwritable) become one-line
`StoreError`s naming the file and what to do; constraint errors and SQL mistakes stay
`sqlite3` errors, since they are the caller's own.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sage_tui.core.safe_text import storable
from sage_tui.errors import StoreError

BUSY_TIMEOUT = 10.0
"""Seconds a statement waits for another process's lock before the store gives up."""

WAL_MAGIC = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
"""The first bytes of a WAL file SQLite wrote (big- and little-endian checksums)."""

_LOCKED = {"SQLITE_BUSY", "SQLITE_LOCKED"}
_DAMAGED = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}
_FULL = {"SQLITE_FULL"}
_UNWRITABLE = {"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"}
_DISK = {"SQLITE_IOERR", "SQLITE_PROTOCOL", "SQLITE_NOLFS"}
_BY_MESSAGE = {
    "database is locked": "SQLITE_BUSY",
    "file is not a database": "SQLITE_NOTADB",
    "malformed": "SQLITE_CORRUPT",
    "disk is full": "SQLITE_FULL",
    "disk I/O error": "SQLITE_IOERR",
    "readonly": "SQLITE_READONLY",
    "unable to open": "SQLITE_CANTOPEN",
}
"""The same codes from the message, where Python (3.10) does not give the code."""

T = TypeVar("T")


def primary_code(err: sqlite3.Error) -> str:
    """SQLite's primary result code of `err` ("SQLITE_IOERR" for SQLITE_IOERR_WRITE), or ""."""
    name = getattr(err, "sqlite_errorname", None)  # Python 3.11+
    if name is None:
        text = str(err)
        return next((code for words, code in _BY_MESSAGE.items() if words in text), "")
    return "_".join(name.split("_")[:2])


def store_error(path: Path, err: sqlite3.Error, busy_timeout: float) -> StoreError | None:
    """`err` as a one-line StoreError when it is a fault of the file or the machine; None for
    the caller's own errors (a constraint, an SQL mistake), which stay as they are."""
    code = primary_code(err)
    if code in _LOCKED:
        return StoreError(
            f"{path} is locked by another process (waited {busy_timeout:g} s): close other"
            " sage-tui windows or commands using this home, then try again"
        )
    if code in _DAMAGED:
        return StoreError(
            f"{path} is not a readable sage-tui database ({err}); it was left as it is: move it"
            " aside to start a new one"
        )
    if code in _FULL:
        return StoreError(f"cannot write {path}: the disk is full ({err}); free some space")
    if code in _UNWRITABLE:
        return StoreError(
            f"cannot write {path} ({err}): check that it and its folder are yours and writable"
        )
    if code in _DISK:
        return StoreError(f"reading or writing {path} failed ({err}): check the disk")
    return None


def opening_error(path: Path, err: sqlite3.Error, busy_timeout: float) -> StoreError:
    """Any SQLite error while opening `path`, as a one-line StoreError."""
    return store_error(path, err, busy_timeout) or StoreError(f"cannot open database {path}: {err}")


def connect(path: Path, busy_timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    """A connection to `path` in autocommit mode (transactions are explicit), rows by name,
    foreign keys enforced; StoreError when the file cannot be opened."""
    try:
        db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=busy_timeout
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as err:
        raise opening_error(path, err, busy_timeout) from None
    return db


def open_database(
    path: Path, migrations: Sequence[str], busy_timeout: float = BUSY_TIMEOUT
) -> sqlite3.Connection:
    """Open `path` (created if missing) in WAL mode at the latest schema version.

    A file that is not a database, or one from a newer sage-tui, is refused and left as it is.
    Another process opening or migrating the same file at the same moment is waited for.
    """
    keep_unreadable_wal(path)
    db = connect(path, busy_timeout)
    try:
        version = _retry_busy(lambda: _version(db), busy_timeout)
        _refuse_newer(path, version, len(migrations))
        _retry_busy(lambda: _use_wal(db), busy_timeout)
        _retry_busy(lambda: migrate(db, path, migrations), busy_timeout)
    except sqlite3.Error as err:
        db.close()
        raise opening_error(path, err, busy_timeout) from None
    except BaseException:
        db.close()
        raise
    return db


def keep_unreadable_wal(path: Path) -> Path | None:
    """Copy a `-wal` file that SQLite would not recognise (and so would discard) aside, as
    `<name>-wal.unreadable`, before the database is opened: nothing is lost, even bytes
    nobody can read yet. Returns the copy, if one was made."""
    wal = path.with_name(path.name + "-wal")
    try:
        with wal.open("rb") as file:
            head = file.read(4)
    except OSError:
        return None
    if not head or head in WAL_MAGIC:
        return None
    copy = wal.with_name(wal.name + ".unreadable")
    if copy.exists():
        copy = wal.with_name(f"{wal.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        shutil.copy2(wal, copy)
    except OSError:
        return None
    return copy


def migrate(db: sqlite3.Connection, path: Path, migrations: Sequence[str]) -> None:
    """Apply the migrations the file lacks, each in its own `BEGIN IMMEDIATE` transaction
    that reads the version first: a step another process applied meanwhile is skipped."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = _version(db)
            _refuse_newer(path, version, len(migrations))
            if version == len(migrations):
                db.execute("COMMIT")
                return
            try:
                for statement in statements(migrations[version]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")
                db.execute("COMMIT")
            except sqlite3.Error as err:
                if primary_code(err) in _LOCKED:
                    raise
                raise StoreError(
                    f"upgrading {path} to schema version {version + 1} failed ({err});"
                    f" it stays at version {version}, unchanged"
                ) from None
        finally:
            rollback(db)


def rollback(db: sqlite3.Connection) -> bool:
    """End an open transaction, if any, without raising; False when it could not be ended
    (the caller should close the connection, which releases its locks)."""
    if not db.in_transaction:
        return True
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error:
        return not db.in_transaction
    return True


def statements(script: str) -> Iterator[str]:
    """The complete SQL statements of `script`, one at a time (triggers kept whole)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending.strip()
            pending = ""
    if pending.strip(" \t\r\n;"):
        yield pending.strip()


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _refuse_newer(path: Path, version: int, known: int) -> None:
    if version > known:
        raise StoreError(
            f"{path} has schema version {version}, newer than this sage-tui knows ({known}):"
            " upgrade sage-tui"
        )


def _use_wal(db: sqlite3.Connection) -> None:
    # The switch needs the file to itself; a file already in WAL mode is left alone, so only
    # the first of several processes opening a fresh home makes it.
    if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        db.execute("PRAGMA journal_mode=WAL")


def _retry_busy(step: Callable[[], T], busy_timeout: float) -> T:
    """Run `step`, again while SQLite answers "busy" without waiting (it does so to break a
    deadlock between two openers), until the busy timeout has passed."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return step()
        except sqlite3.OperationalError as err:
            if primary_code(err) not in _LOCKED or time.monotonic() >= deadline:
                raise
        time.sleep(0.02)


class StorableConnection:
    """A connection whose `execute` / `executemany` store any text: a str parameter holding
    lone surrogates (bytes that were not UTF-8: a file name, a log line) is written with them
    as escapes (`core.safe_text.storable`) instead of failing the whole statement with a
    UnicodeEncodeError (which left a job's end unsaved on every poll)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, _storable(params))

    def executemany(self, sql: str, rows: Iterable[Any]) -> sqlite3.Cursor:
        return self._db.executemany(sql, (_storable(row) for row in rows))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _storable(params: Any) -> Any:
    if isinstance(params, Mapping):
        return {key: _value(value) for key, value in params.items()}
    return [_value(value) for value in params]


def _value(value: Any) -> Any:
    return storable(value) if isinstance(value, str) else value
