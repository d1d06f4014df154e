"""A reply being generated, and the figures shown under it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sage_tui.core.engines.base import Adapter, Delta, Engine, Sampling
from sage_tui.core.engines.request_failure import EngineStopped, request_failure
from sage_tui.core.engines.stop_text import StopText


@dataclass
class ReplyStats:
    """Figures shown under every reply."""

    model: str
    engine: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token: float | None = None
    seconds: float = 0.0
    finish_reason: str | None = None
    trimmed_messages: int = 0
    """Oldest messages left out because the conversation did not fit the context."""

    @property
    def tokens_per_second(self) -> float:
        """Decode speed: tokens after the first, over the time after the first."""
        if self.time_to_first_token is None or self.completion_tokens < 2:
            return 0.0
        decode = self.seconds - self.time_to_first_token
        return (self.completion_tokens - 1) / decode if decode > 0 else 0.0


@dataclass
class Reply:
    """A reply being generated: iterate it once for text; `stats` is complete when it ends.

    Leaving the loop early (break) ends the request in the engine too.
    """

    request_id: str
    stats: ReplyStats
    _deltas: AsyncIterator[Delta] = field(repr=False)
    _read: bool = field(default=False, repr=False)

    def __aiter__(self) -> AsyncIterator[str]:
        if self._read:
            raise RuntimeError(f"reply {self.request_id} has already been read")
        self._read = True
        return self._text()

    async def _text(self) -> AsyncIterator[str]:
        # aclosing: a consumer that stops early closes the engine stream too (which aborts
        # the request) instead of leaving it to generate until garbage collection.
        async with contextlib.aclosing(self._deltas) as deltas:
            async for delta in deltas:
                if delta.text:
                    yield delta.text

    async def close(self) -> None:
        """End the request in the engine without reading the reply (nothing if already read)."""
        if not self._read:
            self._read = True
            await self._deltas.aclose()

    async def text(self) -> str:
        """The whole reply (reads it)."""
        return "".join([piece async for piece in self])


async def stream_reply(
    engine: Engine,
    prompt: list[int],
    sampling: Sampling,
    adapter: Adapter | None,
    request_id: str,
    stats: ReplyStats,
    running: dict[str, Engine],
) -> AsyncIterator[Delta]:
    """The engine's deltas for one request, with `stats` kept current and stop texts applied:
    the reply ends before the first one found, and the engine's request is aborted there.

    `running` is the manager's map of the requests streaming now to their engine (for aborts,
    and for ending them when the engine is replaced).
    """
    started = time.monotonic()
    running[request_id] = engine
    stops = StopText(sampling.stop)
    try:
        try:
            deltas = engine.stream(prompt, sampling, adapter, request_id)
            async with contextlib.aclosing(deltas):
                async for delta in deltas:
                    if delta.tokens and stats.time_to_first_token is None:
                        stats.time_to_first_token = time.monotonic() - started
                    stats.completion_tokens += delta.tokens
                    text = stops.feed(delta.text)
                    finish = "stop" if stops.stopped else delta.finish_reason
                    if finish:
                        stats.finish_reason = finish
                        text += stops.flush()
                    stats.seconds = time.monotonic() - started
                    if stops.stopped:
                        await engine.abort(request_id)  # what follows a stop text is unwanted
                    yield Delta(text, delta.tokens, finish)
                    if finish:
                        return
        except Exception as err:
            failure = request_failure(engine, adapter, err)
            if failure is err:
                raise
            if isinstance(failure, EngineStopped):
                stats.finish_reason = "abort"
            raise failure from err
    except asyncio.CancelledError:
        stats.finish_reason = "abort"
        await engine.abort(request_id)
        raise
    finally:
        # A consumer that stops early (break, close) must not leave the request running.
        if stats.finish_reason is None:
            stats.finish_reason = "abort"
            await engine.abort(request_id)
        stats.seconds = time.monotonic() - started
        running.pop(request_id, None)
