"""SQLite storage: the one source of truth for models, jobs, conversations and settings.

Stdlib `sqlite3` in WAL mode, so the TUI, the CLI and training children can read while one
writes. The schema carries a version (`PRAGMA user_version`) and moves forward through the
numbered migrations below, each in its own transaction: a failed migration leaves the file at
the previous version with its data intact. A file that is not a database, or one written by a
newer sage-tui, is refused with a one-line error and left untouched (`store_db` opens the file,
race-safe between processes, and words SQLite's faults).

Every read and write goes through `Store.read` or `Store.transaction`: a locked, damaged or
full database is a one-line StoreError whenever it happens, and a transaction that fails in
any way (its block raising, a constraint, COMMIT itself) is rolled back, so the connection is
never left holding the write lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_tui.core.store_db import (
    BUSY_TIMEOUT,
    StorableConnection,
    connect,
    open_database,
    rollback,
    store_error,
)

# Index i holds the script that takes the schema from version i to i + 1. Append only: a
# released migration is never edited, since databases in the field have already run it.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE models (
        name        TEXT PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('base', 'adapter')),
        source      TEXT NOT NULL,              -- builtin | local | hf | finetune
        path        TEXT NOT NULL,              -- folder on disk
        base_model  TEXT,                       -- adapters: the base model's name
        config      TEXT NOT NULL DEFAULT '{}', -- JSON: engine settings, LoRA rank, ...
        created_at  REAL NOT NULL
    );
    CREATE TABLE jobs (
        id          TEXT PRIMARY KEY,           -- the task id
        base_model  TEXT NOT NULL,
        dataset     TEXT NOT NULL,
        status      TEXT NOT NULL,
        spec        TEXT NOT NULL,              -- JSON job spec
        output_dir  TEXT NOT NULL,
        pid         INTEGER,
        error       TEXT,
        created_at  REAL NOT NULL,
        started_at  REAL,
        finished_at REAL
    );
    CREATE TABLE conversations (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        title         TEXT NOT NULL DEFAULT '',
        model         TEXT,
        system_prompt TEXT NOT NULL DEFAULT '',
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL
    );
    CREATE TABLE messages (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role            TEXT NOT NULL,
        content         TEXT NOT NULL,
        model           TEXT,
        stats           TEXT,                   -- JSON: time to first token, tokens/s
        created_at      REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 1 -> 2: where a running job was placed: a JSON list of GPU numbers ([] for the CPU).
    """
    ALTER TABLE jobs ADD COLUMN gpus TEXT;
    """,
    # 2 -> 3: an ended job's progress as its events left it (JSON), so a listing of a
    # thousand jobs reads no folder of an ended one.
    """
    ALTER TABLE jobs ADD COLUMN progress TEXT;
    """,
    # 3 -> 4: blind A/B votes between two models of one base (the arena's leaderboard).
    """
    CREATE TABLE votes (
        id          INTEGER PRIMARY KEY,
        base_model  TEXT NOT NULL,
        prompt      TEXT NOT NULL,
        model_a     TEXT NOT NULL,
        model_b     TEXT NOT NULL,
        reply_a     TEXT NOT NULL,
        reply_b     TEXT NOT NULL,
        verdict     TEXT NOT NULL CHECK (verdict IN ('a', 'b', 'tie', 'both_bad')),
        created_at  REAL NOT NULL
    );
    CREATE INDEX votes_by_base ON votes (base_model);
    """,
    # 4 -> 5: a conversation held in compare mode names its models (a JSON list, in pane
    # order); NULL for a chat with one model.
    """
    ALTER TABLE conversations ADD COLUMN models TEXT;
    """,
    # 5 -> 6: each request the OpenAI-compatible API served, with its reply's figures (JSON,
    # as a chat message keeps them), for the performance panel and `serve --status`.
    """
    CREATE TABLE api_requests (
        id          INTEGER PRIMARY KEY,
        model       TEXT NOT NULL,
        route       TEXT NOT NULL,
        status      INTEGER NOT NULL,
        stats       TEXT,
        created_at  REAL NOT NULL
    );
    CREATE INDEX api_requests_by_model ON api_requests (model, id);
    """,
)

ACTIVE_MODEL_KEY = "active_model"


@dataclass(frozen=True)
class ModelRecord:
    """A registered base model or LoRA adapter."""

    name: str
    kind: str
    source: str
    path: str
    base_model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


class Store:
    """One SQLite database; safe to share between threads of one process."""

    def __init__(
        self,
        path: Path,
        migrations: Sequence[str] = MIGRATIONS,
        *,
        busy_timeout: float | None = None,
    ) -> None:
        """Open (or create) the database at `path`; StoreError if it cannot be used.

        `busy_timeout`: seconds to wait for another process's lock (default BUSY_TIMEOUT).
        """
        self.path = Path(path)
        self._busy_timeout = BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        self._lock = threading.RLock()
        self._db = open_database(self.path, migrations, self._busy_timeout)

    @property
    def busy_timeout(self) -> float:
        """Seconds a statement waits for another process's lock before a StoreError."""
        return self._busy_timeout

    @busy_timeout.setter
    def busy_timeout(self, seconds: float) -> None:
        with self._lock:
            self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
            self._busy_timeout = seconds

    @property
    def schema_version(self) -> int:
        """The version the file is at (the number of migrations applied)."""
        with self.read() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, under its lock, for reads; a fault of the file is a StoreError."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as err:
                raise self._fault(err) from None

    @contextmanager
    def transaction(self) -> Iterator[StorableConnection]:
        """Run statements atomically (`BEGIN IMMEDIATE` ... `COMMIT`).

        Whatever fails (the block, a constraint, COMMIT itself) rolls the transaction back
        before the error goes on, so the next statement works and other processes are not
        locked out; faults of the file are StoreErrors, the caller's own errors stay as they
        are.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise self._fault(err) from None
            try:
                yield StorableConnection(self._db)
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._end_transaction()
                raise self._fault(err) from None
            except BaseException:
                self._end_transaction()
                raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of one read-only statement (under the connection's lock)."""
        with self.read() as db:
            return db.execute(sql, params).fetchall()

    def _end_transaction(self) -> None:
        # A ROLLBACK can fail too (a disk I/O error): a fresh connection then releases the
        # write lock the old one held, rather than keep it for the life of the process.
        if not rollback(self._db):
            self._db.close()
            self._db = connect(self.path, self.busy_timeout)

    def _fault(self, err: sqlite3.Error) -> Exception:
        """`err` as the store raises it: a StoreError for faults of the file, else itself."""
        return store_error(self.path, err, self.busy_timeout) or err

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # -- models -----------------------------------------------------------------------------

    def upsert_model(self, record: ModelRecord) -> ModelRecord:
        """Register a model, replacing one of the same name."""
        created = record.created_at or time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO models"
                " (name, kind, source, path, base_model, config, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.name,
                    record.kind,
                    record.source,
                    record.path,
                    record.base_model,
                    json.dumps(record.config, sort_keys=True),
                    created,
                ),
            )
        return self.get_model(record.name)  # type: ignore[return-value]

    def get_model(self, name: str) -> ModelRecord | None:
        """The model registered as `name`, if any."""
        rows = self.query("SELECT * FROM models WHERE name = ?", (name,))
        return _model(rows[0]) if rows else None

    def list_models(self) -> list[ModelRecord]:
        """All registered models: base models first, then adapters, each by name."""
        rows = self.query("SELECT * FROM models ORDER BY kind = 'adapter', name")
        return [_model(row) for row in rows]

    def remove_model(self, name: str) -> bool:
        """Forget a model (its files stay). True if it was registered."""
        with self.transaction() as db:
            return db.execute("DELETE FROM models WHERE name = ?", (name,)).rowcount > 0

    def rename_model(self, old: str, new: str) -> None:
        """Give model `old` the name `new` everywhere it is named: its adapters' base, the jobs
        on it, the votes and replies of it, the active model. One transaction."""
        with self.transaction() as db:
            db.execute("UPDATE models SET name = ? WHERE name = ?", (new, old))
            db.execute("UPDATE models SET base_model = ? WHERE base_model = ?", (new, old))
            db.execute("UPDATE jobs SET base_model = ? WHERE base_model = ?", (new, old))
            for column in ("base_model", "model_a", "model_b"):
                db.execute(f"UPDATE votes SET {column} = ? WHERE {column} = ?", (new, old))
            db.execute("UPDATE conversations SET model = ? WHERE model = ?", (new, old))
            db.execute("UPDATE messages SET model = ? WHERE model = ?", (new, old))
            db.execute(
                "UPDATE conversations SET models = (SELECT json_group_array(CASE WHEN value = ?"
                " THEN ? ELSE value END) FROM json_each(conversations.models))"
                " WHERE models IS NOT NULL"
                " AND EXISTS (SELECT 1 FROM json_each(conversations.models) WHERE value = ?)",
                (old, new, old),
            )
            db.execute(
                "UPDATE settings SET value = ? WHERE key = ? AND value = ?",
                (new, ACTIVE_MODEL_KEY, old),
            )

    # -- settings ---------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        """A stored setting, or None."""
        rows = self.query("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_setting(self, key: str, value: str | None) -> None:
        """Store a setting; None removes it."""
        with self.transaction() as db:
            if value is None:
                db.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value)
                )


def _model(row: sqlite3.Row) -> ModelRecord:
    return ModelRecord(
        name=row["name"],
        kind=row["kind"],
        source=row["source"],
        path=row["path"],
        base_model=row["base_model"],
        config=json.loads(row["config"]),
        created_at=row["created_at"],
    )
