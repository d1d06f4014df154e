"""A conversation held in compare mode, saved as it happens with which model said what.

Every model keeps its own thread of the conversation: the user's messages and its own replies
(model B never sees what A answered). A turn is saved as the user's message followed by one
assistant message per model, in pane order, each naming its model; the replies are written
empty and marked cut off when the turn starts, saved about once a second as they stream, and
finished with their figures (or the pane's error) when they end. A saved conversation reopens
as the same panes with the same turns, and goes on from there.

A blind session (the A/B arena) saves no conversation: its record is the vote, with the prompt
and both replies. Each of its prompts is a fresh turn with the models in a new random order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sage_tui.core.chat import CUT_OFF, stats_figures
from sage_tui.core.conversations import ConversationStore, MessageRecord
from sage_tui.core.engines.base import Message, Sampling
from sage_tui.core.engines.reply import Reply
from sage_tui.errors import SageError
from sage_tui.studio.arena import ArenaDesk, BlindPair
from sage_tui.studio.compare import Compared, CompareDesk, Pieces

DRAFT_SAVE_SECONDS = 1.0


@dataclass(frozen=True)
class Turn:
    """One prompt of a saved compare conversation and each model's reply to it."""

    prompt: str
    replies: dict[str, MessageRecord]


class CompareSession:
    """The models side by side (`models`, pane order) and their conversation."""

    def __init__(
        self,
        desk: CompareDesk,
        conversations: ConversationStore,
        arena: ArenaDesk | None = None,
    ) -> None:
        self.desk = desk
        self.conversations = conversations
        self.arena = arena
        self.models: list[str] = []
        self.blind: BlindPair | None = None
        """The pair of the blind turn under way or last answered (None outside blind mode)."""
        self.system_prompt = ""
        self.conversation_id: int | None = None
        self.histories: dict[str, list[Message]] = {}
        self.rng = random.Random()
        """Draws the blind order (tests seed it)."""
        self.replies: dict[int, Reply] = {}
        """The replies streaming now, by pane: what `stop` ends."""

    # -- choosing ------------------------------------------------------------------------------

    def choose(self, names: Sequence[str], blind: bool = False) -> str:
        """Compare `names` from a new conversation; returns their base model's name.

        Blocking (the registry). CompareError (too few or many, twice, different bases) or a
        VoteError (blind needs exactly two) leaves the session as it was.
        """
        base = self.desk.base_for(names)
        if blind:
            if self.arena is None:
                raise SageError("blind comparisons need the arena desk")
            self.blind = self.arena.blind_pair(*names, self.rng) if len(names) == 2 else None
            if self.blind is None:
                raise SageError(f"blind A/B compares exactly two models, not {len(names)}")
        else:
            self.blind = None
        self.models = list(names)
        self.new()
        return base.name

    def new(self) -> None:
        """An empty conversation with the same models (saved when its first turn starts)."""
        self.conversation_id = None
        self.histories = {name: [] for name in self.models}

    def open(self, conversation_id: int) -> list[Turn]:
        """Continue a saved compare conversation; returns its turns. Blocking."""
        record = self.conversations.get(conversation_id)
        if record is None:
            raise SageError(f"conversation {conversation_id} does not exist")
        if not record.models:
            raise SageError(
                f"conversation {conversation_id} is a chat with one model: open it in Chat"
            )
        self.blind = None
        self.models = list(record.models)
        self.new()
        self.conversation_id = conversation_id
        self.system_prompt = record.system_prompt
        turns: list[Turn] = []
        for message in self.conversations.messages(conversation_id):
            if message.role == "user":
                turns.append(Turn(message.content, {}))
                for history in self.histories.values():
                    history.append({"role": "user", "content": message.content})
            elif message.role == "assistant" and turns and message.model in self.histories:
                turns[-1].replies[message.model] = message
                if message.content:  # a reply cut off before its first word is not sent back
                    self.histories[message.model].append(
                        {"role": "assistant", "content": message.content}
                    )
        return turns

    # -- a turn --------------------------------------------------------------------------------

    def pane_names(self) -> list[str]:
        """What the panes are called: the models, or A and B while a blind vote is pending."""
        return ["A", "B"] if self.blind is not None else list(self.models)

    def request(self, text: str) -> dict[str, list[Message]]:
        """What each model is sent for the user's message `text`."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        user = {"role": "user", "content": text}
        return {name: [*system, *self.histories.get(name, []), user] for name in self.models}

    async def send(
        self, text: str, sampling: Sampling, on_piece: Pieces | None = None
    ) -> list[Compared]:
        """Every model's reply to `text`, in pane order; saved as they stream (not blind)."""
        text = text.strip()
        if not text:
            raise SageError("the message is empty: type something to send")
        if self.blind is not None:
            # A new random order for every blind prompt, and a single turn: no history.
            self.blind = self.arena.blind_pair(self.blind.model_a, self.blind.model_b, self.rng)
            self.models = [self.blind.model_a, self.blind.model_b]
            self.new()
        sent = self.request(text)
        drafts = [] if self.blind is not None else await asyncio.to_thread(self._start_turn, text)
        parts: list[list[str]] = [[] for _ in self.models]
        saved_at = time.monotonic()
        saving: asyncio.Task | None = None

        def piece(index: int, chunk: str) -> None:
            nonlocal saved_at, saving
            parts[index].append(chunk)
            if on_piece is not None:
                on_piece(index, chunk)
            due = time.monotonic() - saved_at >= DRAFT_SAVE_SECONDS
            if drafts and due and (saving is None or saving.done()):
                texts = ["".join(p) for p in parts]
                saving = asyncio.create_task(asyncio.to_thread(self._save_drafts, drafts, texts))
                saved_at = time.monotonic()

        try:
            results = await self.desk.compare(sent, self.models, sampling, piece, self._started)
        except asyncio.CancelledError:  # the studio closing mid-turn: keep what was shown
            if drafts:
                await asyncio.to_thread(self._save_drafts, drafts, ["".join(p) for p in parts])
            raise
        except BaseException:
            if drafts:  # nothing was answered (the engine could not load): nothing is kept
                await asyncio.to_thread(self._undo_turn, drafts)
            raise
        finally:
            self.replies.clear()
        if saving is not None:
            await saving
        if drafts:
            await asyncio.to_thread(self._finish_turn, drafts, results)
        for result in results:
            history = self.histories[result.model]
            history += [{"role": "user", "content": text}]
            if result.text:
                history.append({"role": "assistant", "content": result.text})
        return results

    def _started(self, index: int, reply: Reply) -> None:
        self.replies[index] = reply

    async def stop(self) -> None:
        """End every reply streaming now (what arrived is kept)."""
        for reply in list(self.replies.values()):
            await self.desk.engine.manager.abort(reply.request_id)

    # -- saving (blocking: called in threads) --------------------------------------------------

    def _start_turn(self, text: str) -> list[int]:
        if self.conversation_id is None:
            self.conversation_id = self.conversations.create(
                model=self.models[0], system_prompt=self.system_prompt, models=self.models
            )
        ids = [self.conversations.add_message(self.conversation_id, "user", text)]
        for name in self.models:
            ids.append(
                self.conversations.add_message(
                    self.conversation_id, "assistant", "", model=name, stats={CUT_OFF: True}
                )
            )
        return ids

    def _save_drafts(self, ids: list[int], texts: list[str]) -> None:
        for message_id, text in zip(ids[1:], texts, strict=True):
            self.conversations.update_message(message_id, text)

    def _finish_turn(self, ids: list[int], results: list[Compared]) -> None:
        for message_id, result in zip(ids[1:], results, strict=True):
            figures = stats_figures(result.stats) if result.stats else {"model": result.model}
            if result.error is not None:
                figures["error"] = result.error
            self.conversations.update_message(message_id, result.text, stats=figures)

    def _undo_turn(self, ids: list[int]) -> None:
        self.conversations.delete_messages(ids)
        if self.conversation_id is not None and not self.conversations.messages(
            self.conversation_id
        ):
            self.conversations.delete(self.conversation_id)
            self.conversation_id = None

    # -- the vote ------------------------------------------------------------------------------

    def vote(self, prompt: str, results: Sequence[Compared], verdict: str):
        """Record the verdict on a blind turn's replies; blocking. VoteError: nothing saved."""
        if self.blind is None or self.arena is None:
            raise SageError("only a blind turn is voted on")
        by_model = {result.model: result.text for result in results}
        pair = self.blind
        return self.arena.vote(
            pair, prompt, by_model.get(pair.model_a, ""), by_model.get(pair.model_b, ""), verdict
        )
