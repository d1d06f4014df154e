"""Saved chats: conversations and their messages, written as they happen.

A conversation held in compare mode names its models (pane order); its replies are the
assistant messages after each user message, one per model, each naming its model.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sage_tui.core.store import Store


@dataclass(frozen=True)
class ConversationRecord:
    """A saved chat."""

    id: int
    title: str
    model: str | None
    system_prompt: str
    created_at: float
    updated_at: float
    models: tuple[str, ...] = ()
    """The models side by side, in pane order, for a conversation held in compare mode."""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ConversationRecord:
        values = dict(row)
        values["models"] = tuple(json.loads(values.get("models") or "[]"))
        return cls(**values)


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

    def create(
        self,
        title: str = "",
        model: str | None = None,
        system_prompt: str = "",
        models: Sequence[str] = (),
    ) -> int:
        """A new conversation (in compare mode when `models` names its panes); returns its id."""
        now = time.time()
        panes = json.dumps(list(models)) if models else None
        with self.store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO conversations"
                " (title, model, system_prompt, created_at, updated_at, models)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (title, model, system_prompt, now, now, panes),
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

    def update_message(
        self, message_id: int, content: str, stats: dict[str, Any] | None = None
    ) -> None:
        """Replace a message's text (a reply as it streams), and its figures when given."""
        with self.store.transaction() as db:
            if stats is None:
                db.execute("UPDATE messages SET content = ? WHERE id = ?", (content, message_id))
            else:
                db.execute(
                    "UPDATE messages SET content = ?, stats = ? WHERE id = ?",
                    (content, json.dumps(stats), message_id),
                )

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
        rows = self.store.query("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        return ConversationRecord.from_row(rows[0]) if rows else None

    def recent(self, limit: int = 100) -> list[ConversationRecord]:
        """Conversations with at least one message, most recently used first."""
        rows = self.store.query(
            "SELECT * FROM conversations c WHERE EXISTS"
            " (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)"
            " ORDER BY updated_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [ConversationRecord.from_row(row) for row in rows]

    def messages(self, conversation_id: int) -> list[MessageRecord]:
        """A conversation's messages, oldest first."""
        rows = self.store.query(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        )
        return [
            MessageRecord(**{**dict(row), "stats": json.loads(row["stats"] or "{}")})
            for row in rows
        ]

    def delete_messages(self, message_ids: Sequence[int]) -> None:
        """Remove messages (a turn that never started)."""
        with self.store.transaction() as db:
            db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in message_ids])

    def delete(self, conversation_id: int) -> None:
        """Remove a conversation and its messages."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))


def _title(text: str, width: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"
