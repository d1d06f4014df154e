"""Compare: one prompt answered by two to four models of one base at once.

The engine serves a base model and its LoRA adapters per request, so the base and several
adapters answer the same prompt as concurrent requests of one engine, with no reload. A model
on another base is refused before anything is sent; a pane that fails (an adapter deleted from
disk under the request or removed from the models since it was chosen, the engine dying) ends
with its error and the others go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sage_tui.core.engines.base import Message, Sampling
from sage_tui.core.engines.reply import Reply, ReplyStats
from sage_tui.core.store import ModelRecord
from sage_tui.errors import ModelError, SageError, describe_error
from sage_tui.studio.engine import EngineDesk

MAX_MODELS = 4


class CompareError(SageError):
    """Models that cannot be compared together (too few, too many, on different bases)."""


@dataclass(frozen=True)
class Compared:
    """One model's answer in a comparison."""

    model: str
    text: str
    stats: ReplyStats | None
    """None when the request could not start."""
    started: float
    """Monotonic seconds when its request was sent, and when its last piece came."""
    ended: float
    error: str | None = None


Pieces = Callable[[int, str], None]
"""Called with the pane's number and each piece of text as it streams."""
Started = Callable[[int, Reply], None]
"""Called with the pane's number and its reply once the engine accepted its request (the
reply's request id is what stops it)."""


class CompareDesk:
    """Side-by-side replies from models of the loaded base."""

    def __init__(self, engine: EngineDesk) -> None:
        self.engine = engine

    def base_for(self, names: Sequence[str], gone: dict[str, str] | None = None) -> ModelRecord:
        """The one base model under `names`; CompareError naming the problem otherwise.

        With `gone`, a model no longer registered is not an error: why goes into `gone` under
        its name, and the base is that of the others (one of them must still be there).
        """
        if not 2 <= len(names) <= MAX_MODELS:
            raise CompareError(f"compare needs 2 to {MAX_MODELS} models, got {len(names)}")
        if len(set(names)) != len(names):
            twice = sorted({name for name in names if list(names).count(name) > 1})
            raise CompareError(f"{', '.join(twice)} is chosen twice: choose different models")
        registry = self.engine.registry
        bases = {}
        for name in names:
            try:
                bases[name] = registry.base_of(registry.get(name))
            except ModelError:
                if gone is None or len(gone) + 1 == len(names):
                    raise
                gone[name] = (
                    f"{name} was removed from the models after it was chosen: it cannot answer"
                )
        first, base = next(iter(bases.items()))
        for name, other in bases.items():
            if other.name != base.name:
                raise CompareError(
                    f"{name} is on base {other.name}, {first} on {base.name}: compare models"
                    " of one base (the base model and its adapters), which one engine serves"
                )
        return base

    async def compare(
        self,
        messages: Sequence[Message] | Mapping[str, Sequence[Message]],
        names: Sequence[str],
        sampling: Sampling,
        on_piece: Pieces | None = None,
        on_start: Started | None = None,
    ) -> list[Compared]:
        """Every model's reply to `messages` (the same for all, or each model's own
        conversation by name), in the order of `names`, sent at once.

        The engine is loaded for their base first when it runs another (the only reload); the
        replies then share the engine's batch.
        """
        sent = messages if isinstance(messages, Mapping) else dict.fromkeys(names, messages)
        gone: dict[str, str] = {}
        base = await asyncio.to_thread(self.base_for, names, gone)
        here = [name for name in names if name not in gone]
        loaded = self.engine.manager.loaded_base
        if loaded is None or loaded.name != base.name:
            await self.engine.start(here[0], raise_errors=True)
        for name in here:  # a no-op unless an adapter's LoRA rank is above the engine's
            await self.engine.manager.ensure_loaded(name)
        now = time.monotonic()
        return list(
            await asyncio.gather(
                *(
                    self._gone(name, now, gone[name])
                    if name in gone
                    else self._one(index, name, sent[name], sampling, on_piece, on_start)
                    for index, name in enumerate(names)
                )
            )
        )

    @staticmethod
    async def _gone(name: str, now: float, why: str) -> Compared:
        return Compared(name, "", None, now, now, why)

    async def _one(
        self,
        index: int,
        name: str,
        messages: Sequence[Message],
        sampling: Sampling,
        on_piece: Pieces | None,
        on_start: Started | None,
    ) -> Compared:
        started = time.monotonic()
        pieces: list[str] = []
        stats = None
        try:
            reply = await self.engine.reply(messages, sampling, model=name)
            stats = reply.stats
            if on_start is not None:
                on_start(index, reply)
            async for piece in reply:
                pieces.append(piece)
                if on_piece is not None:
                    on_piece(index, piece)
        except Exception as err:  # one pane's failure ends that pane only
            return Compared(
                name, "".join(pieces), stats, started, time.monotonic(), describe_error(err)
            )
        return Compared(name, "".join(pieces), stats, started, time.monotonic())
