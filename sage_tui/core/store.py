"""SQLite storage: the one source of truth for models, jobs, conversations and settings.

Stdlib `sqlite3` in WAL mode, so the TUI, the CLI and training children can read while one
writes. The schema carries a version (`PRAGMA user_version`) and moves forward through the
numbered migrations below, each in its own transaction: a failed migration leaves the file at
the previous version with its data intact. A file that is not a database, or one written by a
newer sage-tui, is refused with a one-line error and left untouched.
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

from sage_tui.errors import StoreError

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

    def __init__(self, path: Path, migrations: Sequence[str] = MIGRATIONS) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=10
            )
        except sqlite3.Error as err:
            raise StoreError(f"cannot open database {self.path}: {err}") from None
        self._db.row_factory = sqlite3.Row
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise StoreError(
                f"{self.path} is not a readable sage-tui database ({err}); it was left as it is:"
                " move it aside to start a new one"
            ) from None
        if version > len(migrations):
            self._db.close()
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this sage-tui knows"
                f" ({len(migrations)}): upgrade sage-tui"
            )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate(version, migrations)

    @property
    def schema_version(self) -> int:
        """The version the file is at (the number of migrations applied)."""
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self, version: int, migrations: Sequence[str]) -> None:
        for target, script in enumerate(migrations[version:], start=version + 1):
            # executescript commits first; BEGIN inside the script keeps the step atomic.
            try:
                self._db.executescript(
                    f"BEGIN;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;"
                )
            except sqlite3.Error as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(
                    f"upgrading {self.path} to schema version {target} failed ({err});"
                    f" it stays at version {target - 1}, unchanged"
                ) from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run statements atomically; rolls back if the block raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of one read-only statement (under the connection's lock)."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

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
        with self._lock:
            row = self._db.execute("SELECT * FROM models WHERE name = ?", (name,)).fetchone()
        return _model(row) if row else None

    def list_models(self) -> list[ModelRecord]:
        """All registered models: base models first, then adapters, each by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM models ORDER BY kind = 'adapter', name"
            ).fetchall()
        return [_model(row) for row in rows]

    def remove_model(self, name: str) -> bool:
        """Forget a model (its files stay). True if it was registered."""
        with self.transaction() as db:
            return db.execute("DELETE FROM models WHERE name = ?", (name,)).rowcount > 0

    # -- settings ---------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        """A stored setting, or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def set_setting(self, key: str, value: str | None) -> None:
        """Store a setting; None removes it."""
        with self.transaction() as db:
            if value is None:
                db.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value)
                )


@dataclass(frozen=True)
class ConversationRecord:
    """A saved chat."""

    id: int
    title: str
    model: str | None
    system_prompt: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class MessageRecord:
    """One message of a saved chat; `stats` holds reply figures for assistant messages."""

    id: int
    conversation_id: int
    role: str
    content: str
    model: str | None
    stats: dict[str, Any]
    created_at: float


class ConversationStore:
    """Conversations and their messages, saved as they happen."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, title: str = "", model: str | None = None, system_prompt: str = "") -> int:
        """A new conversation; returns its id."""
        now = time.time()
        with self.store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO conversations (title, model, system_prompt, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (title, model, system_prompt, now, now),
            )
            return int(cursor.lastrowid)

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        model: str | None = None,
        stats: dict[str, Any] | None = None,
    ) -> int:
        """Append a message; the first user message also titles an untitled conversation."""
        now = time.time()
        with self.store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, role, content, model, stats, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, model, json.dumps(stats or {}), now),
            )
            db.execute(
                "UPDATE conversations SET updated_at = ?, title = CASE WHEN title = '' AND ? ="
                " 'user' THEN ? ELSE title END WHERE id = ?",
                (now, role, _title(content), conversation_id),
            )
            return int(cursor.lastrowid)

    def update(self, conversation_id: int, **fields: Any) -> None:
        """Change a conversation's title, model or system prompt."""
        allowed = {"title", "model", "system_prompt"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"can only update {sorted(allowed)}, not {sorted(fields)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.store.transaction() as db:
            db.execute(
                f"UPDATE conversations SET {assignments} WHERE id = ?",
                (*fields.values(), conversation_id),
            )

    def get(self, conversation_id: int) -> ConversationRecord | None:
        """One conversation, if it exists."""
        with self.store._lock:
            row = self.store._db.execute(
                "SELECT * FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        return ConversationRecord(**dict(row)) if row else None

    def recent(self, limit: int = 100) -> list[ConversationRecord]:
        """Conversations with at least one message, most recently used first."""
        with self.store._lock:
            rows = self.store._db.execute(
                "SELECT * FROM conversations c WHERE EXISTS"
                " (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)"
                " ORDER BY updated_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [ConversationRecord(**dict(row)) for row in rows]

    def messages(self, conversation_id: int) -> list[MessageRecord]:
        """A conversation's messages, oldest first."""
        with self.store._lock:
            rows = self.store._db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
        return [
            MessageRecord(**{**dict(row), "stats": json.loads(row["stats"] or "{}")})
            for row in rows
        ]

    def delete(self, conversation_id: int) -> None:
        """Remove a conversation and its messages."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))


def _title(text: str, width: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


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
