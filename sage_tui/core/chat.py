"""Chat sessions: the conversation being held, saved to SQLite as it happens.

A session turns what the user types into an engine request (system prompt + history + new
message) and records both sides with the reply's figures. A message is saved once the engine
has accepted it, so a refused message stays with the user instead of half in the database.

The reply's row is written at the same moment, empty and marked cut off (`CUT_OFF` in its
figures); the screen saves the text as it streams (`save_draft`, about once a second) and the
mark comes off only when the reply ends (`finish`). A studio killed or hung up mid-reply so
leaves the conversation with every message that was shown, the last one marked cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict

from sage_tui.core.conversations import ConversationStore, MessageRecord
from sage_tui.core.engines.base import Message, Sampling
from sage_tui.core.engines.reply import Reply, ReplyStats
from sage_tui.errors import SageError

CUT_OFF = "cut_off"
"""Set in a reply's figures while it streams: a reply still marked so was cut off by the studio
closing (killed, hung up, quit) before it ended."""

ReplyStarter = Callable[..., Awaitable[Reply]]
"""Starts a reply: (messages, sampling, model=None) -> Reply (the studio's engine desk)."""


class ChatSession:
    """One conversation with the active model (or a named one)."""

    def __init__(self, conversations: ConversationStore, start_reply: ReplyStarter) -> None:
        self.conversations = conversations
        self.start_reply = start_reply
        self.conversation_id: int | None = None
        self.system_prompt = ""
        self.history: list[Message] = []
        self.draft_id: int | None = None
        """The saved row of the reply being streamed, until it ends."""

    def new(self) -> None:
        """Start an empty conversation (saved when its first message is sent)."""
        self.conversation_id = None
        self.history = []

    def open(self, conversation_id: int) -> list[MessageRecord]:
        """Continue a saved conversation; returns its messages."""
        record = self.conversations.get(conversation_id)
        if record is None:
            raise SageError(f"conversation {conversation_id} does not exist")
        messages = self.conversations.messages(conversation_id)
        self.conversation_id = conversation_id
        self.system_prompt = record.system_prompt
        # A reply cut off before its first word is shown, but not sent back to the model.
        self.history = [
            {"role": m.role, "content": m.content}
            for m in messages
            if m.content or m.role != "assistant"
        ]
        return messages

    def request_messages(self, text: str) -> list[Message]:
        """What the engine is sent for a new user message `text`."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, *self.history, {"role": "user", "content": text}]

    async def send(self, text: str, sampling: Sampling, model: str | None = None) -> Reply:
        """Start a reply to `text`; the user message is saved once the engine accepts it."""
        text = text.strip()
        reply = await self.start_reply(self.request_messages(text), sampling, model=model)
        try:
            # SQLite off the event loop: a busy disk must not freeze the screen.
            await asyncio.to_thread(self._save_user_message, text, reply.stats.model)
        except BaseException:
            # Not saved (a locked or full database): nobody will read this reply, so the
            # engine must not go on generating it.
            await reply.close()
            raise
        return reply

    def _save_user_message(self, text: str, model: str) -> None:
        if self.conversation_id is None:
            self.conversation_id = self.conversations.create(
                model=model, system_prompt=self.system_prompt
            )
        self.conversations.add_message(self.conversation_id, "user", text)
        self.history.append({"role": "user", "content": text})
        self.draft_id = self.conversations.add_message(
            self.conversation_id,
            "assistant",
            "",
            model=model,
            stats={"model": model, CUT_OFF: True},
        )

    def save_draft(self, text: str) -> None:
        """Save the reply streamed so far (`text`), still marked cut off."""
        if self.draft_id is not None:
            self.conversations.update_message(self.draft_id, text)

    def finish(self, text: str, stats: ReplyStats) -> None:
        """Save a reply that ended (complete, or stopped part-way) with its figures."""
        if self.draft_id is None:
            return
        self.conversations.update_message(self.draft_id, text, stats=stats_figures(stats))
        self.draft_id = None
        self.history.append({"role": "assistant", "content": text})

    def cut_off(self, text: str) -> None:
        """Save a reply the studio is closing in the middle of: `text`, marked cut off."""
        if self.draft_id is None:
            return
        self.save_draft(text)
        self.draft_id = None
        self.history.append({"role": "assistant", "content": text})


def stats_figures(stats: ReplyStats) -> dict:
    """A reply's figures as saved with the message."""
    return {**asdict(stats), "tokens_per_second": stats.tokens_per_second}


def describe_stats(figures: dict) -> str:
    """The line under a reply: model, time to first token, speed, and how it ended."""
    parts = [str(figures.get("model", ""))]
    if figures.get(CUT_OFF):
        return " · ".join([*parts, "cut off: the studio closed while this reply streamed"])
    if figures.get("error"):
        return " · ".join([*parts, f"failed: {figures['error']}"])
    if figures.get("time_to_first_token") is not None:
        parts.append(f"first token {figures['time_to_first_token']:.2f} s")
    parts.append(f"{figures.get('tokens_per_second', 0):.1f} tokens/s")
    parts.append(f"{figures.get('completion_tokens', 0)} tokens")
    ending = {"abort": "stopped", "length": "hit max tokens"}.get(figures.get("finish_reason"))
    if ending:
        parts.append(ending)
    if figures.get("trimmed_messages"):
        parts.append(f"{figures['trimmed_messages']} oldest messages left out to fit")
    return " · ".join(parts)
