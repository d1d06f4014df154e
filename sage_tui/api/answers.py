"""Answering one request: its replies, streamed as server-sent events or gathered whole, in
the `openai` package's response types.

A request with `n` choices (times prompts, for a completion) runs them as concurrent replies
of the one engine: vLLM batches them, each with its own seed (`seed + index`) when one is
given. A reply that ends with "abort" ended because the engine stopped or was replaced: the
request fails with a 503 then (in a stream, an error event), never a cut answer passed off as
complete.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from sage_tui.api.protocol import ApiError, Generation
from sage_tui.core.engines.base import Sampling
from sage_tui.core.engines.reply import Reply, ReplyStats
from sage_tui.core.engines.request_failure import EngineStopped
from sage_tui.errors import describe_error

Finished = Callable[[int, ReplyStats | None], None]
"""Called once when a request has been answered: its status and its first reply's figures."""

ENGINE_STOPPED = "the engine stopped while answering (it was replaced or died); send it again"


def choice_samplings(request: Generation, prompts: int = 1) -> list[Sampling]:
    """The sampling of each choice: `n` per prompt, seeds apart when a seed is given."""
    sampling, count = request.sampling, request.n * prompts
    if sampling.seed is None or count == 1:
        return [sampling] * count
    return [replace(sampling, seed=sampling.seed + index) for index in range(count)]


@dataclass(frozen=True)
class Shape:
    """How one kind of response is built: chat completions or (legacy) completions."""

    prefix: str
    """Of the response id: "chatcmpl" or "cmpl"."""
    whole: Callable[..., Any]
    """(id, created, model, [(text, finish)], usage) -> the whole response."""
    chunk: Callable[..., Any]
    """(id, created, model, index, text | None, finish | None, first) -> one streamed chunk."""
    usage_chunk: Callable[..., Any]
    """(id, created, model, usage) -> the last chunk, with the usage figures."""


def usage(replies: list[Reply], n: int) -> Any:
    """The request's token counts; each prompt counted once (its `n` choices share it)."""
    from openai.types import CompletionUsage

    prompt = sum(reply.stats.prompt_tokens for reply in replies[::n])
    completion = sum(reply.stats.completion_tokens for reply in replies)
    return CompletionUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


async def whole(
    shape: Shape, model: str, replies: list[Reply], n: int, finished: Finished
) -> dict[str, Any]:
    """Every reply read to its end; the response as JSON data."""
    reading = [asyncio.ensure_future(reply.text()) for reply in replies]
    try:
        texts = await asyncio.gather(*reading)
    except BaseException:
        # One failed (or the request was cancelled): the others stop generating too.
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)
        raise
    if any(reply.stats.finish_reason == "abort" for reply in replies):
        raise failure(EngineStopped(ENGINE_STOPPED))
    finished(200, replies[0].stats)
    done = [(text, reply.stats.finish_reason) for text, reply in zip(texts, replies, strict=True)]
    response = shape.whole(_id(shape), int(time.time()), model, done, usage(replies, n))
    return response.model_dump(mode="json", exclude_unset=True)


async def streamed(
    shape: Shape,
    model: str,
    replies: list[Reply],
    n: int,
    include_usage: bool,
    finished: Finished,
) -> AsyncIterator[str]:
    """The replies as server-sent events, choices interleaved as their text arrives."""
    ident, created = _id(shape), int(time.time())
    queue: asyncio.Queue[tuple[int, str | BaseException | None]] = asyncio.Queue()
    pumps = [asyncio.ensure_future(_pump(index, r, queue)) for index, r in enumerate(replies)]
    status = 499  # the client went away before the end
    try:
        for index in range(len(replies)):
            yield _event(shape.chunk(ident, created, model, index, "", None, True))
        open_choices = len(replies)
        while open_choices:
            index, piece = await queue.get()
            if isinstance(piece, BaseException):
                error = failure(piece)
                status = error.status
                yield _event(error.body())
                return
            if piece is not None:
                yield _event(shape.chunk(ident, created, model, index, piece, None, False))
                continue
            open_choices -= 1
            finish = replies[index].stats.finish_reason
            if finish == "abort":
                error = failure(EngineStopped(ENGINE_STOPPED))
                status = error.status
                yield _event(error.body())
                return
            yield _event(shape.chunk(ident, created, model, index, None, finish, False))
        if include_usage:
            yield _event(shape.usage_chunk(ident, created, model, usage(replies, n)))
        status = 200
        yield "data: [DONE]\n\n"
    finally:
        # Cancelling a pump closes its reply, which aborts the request in the engine.
        for pump in pumps:
            pump.cancel()
        finished(status, replies[0].stats)


async def _pump(
    index: int, reply: Reply, queue: asyncio.Queue[tuple[int, str | BaseException | None]]
) -> None:
    try:
        async for piece in reply:
            queue.put_nowait((index, piece))
    except asyncio.CancelledError:
        raise
    except Exception as err:
        queue.put_nowait((index, err))
        return
    queue.put_nowait((index, None))


def failure(err: BaseException) -> ApiError:
    """A reply that failed, as the API says it: 503 when the engine stopped, else 500."""
    if isinstance(err, EngineStopped):
        return ApiError(503, str(err), kind="server_error", code="engine_stopped")
    return ApiError(500, describe_error(err), kind="server_error")


def _event(data: Any) -> str:
    text = data.model_dump_json(exclude_unset=True) if hasattr(data, "model_dump_json") else None
    return f"data: {text if text is not None else json.dumps(data)}\n\n"


def _id(shape: Shape) -> str:
    return f"{shape.prefix}-{uuid.uuid4().hex}"


async def start_all(starts: list[Callable[[], Awaitable[Reply]]]) -> list[Reply]:
    """Start every reply; if one cannot start, those started are closed before it raises."""
    replies: list[Reply] = []
    try:
        for start in starts:
            replies.append(await start())
    except BaseException:
        for reply in replies:
            await reply.close()
        raise
    return replies
