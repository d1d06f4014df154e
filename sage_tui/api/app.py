"""The OpenAI-compatible routes: FastAPI over the studio's serving desk.

- `GET /v1/models`, `GET /v1/models/{id}`: the served base model and its adapters;
- `POST /v1/chat/completions`, `POST /v1/completions`: streamed (server-sent events) or not.

Every route asks for the API key (`Authorization: Bearer <key>`, compared in constant time);
every error is OpenAI's error object with a fitting status: 400 for a request that cannot be
served (naming the parameter), 401 for the key, 404 for a model not served (listing those that
are), 503 when the engine stopped under a request. Why not vLLM's own OpenAI server: it runs
an engine of its own (the studio's is shared with the TUI), knows nothing of the studio's
adapter names, and does not exist for the transformers engine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from sage_tui.api import answers
from sage_tui.api.protocol import ApiError, Generation, chat_request, completion_request
from sage_tui.core.api_key import same_key
from sage_tui.core.engines.reply import Reply, ReplyStats
from sage_tui.core.engines.request_failure import EngineStopped
from sage_tui.errors import SageError, describe_error
from sage_tui.studio.serving import NotServed, ServeDesk

RequestLog = Callable[[str, str, int, ReplyStats | None, float], None]
"""(route, model, status, stats, seconds): one line of the request log."""


def _chat_shape() -> answers.Shape:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice
    from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
    from openai.types.chat.chat_completion_chunk import ChoiceDelta

    def whole(ident, created, model, done, usage):
        choices = [
            Choice(
                index=index,
                message=ChatCompletionMessage(role="assistant", content=text),
                finish_reason=finish,
            )
            for index, (text, finish) in enumerate(done)
        ]
        return ChatCompletion(
            id=ident,
            object="chat.completion",
            created=created,
            model=model,
            choices=choices,
            usage=usage,
        )

    def chunk(ident, created, model, index, text, finish, first):
        if first:
            delta = ChoiceDelta(role="assistant", content="")
        else:
            delta = ChoiceDelta(content=text) if text is not None else ChoiceDelta()
        choice = ChunkChoice(index=index, delta=delta, finish_reason=finish)
        return ChatCompletionChunk(
            id=ident,
            object="chat.completion.chunk",
            created=created,
            model=model,
            choices=[choice],
        )

    def usage_chunk(ident, created, model, usage):
        return ChatCompletionChunk(
            id=ident,
            object="chat.completion.chunk",
            created=created,
            model=model,
            choices=[],
            usage=usage,
        )

    return answers.Shape("chatcmpl", whole, chunk, usage_chunk)


def _completion_shape() -> answers.Shape:
    from openai.types import Completion, CompletionChoice

    def build(ident, created, model, choices, usage=None):
        fields: dict[str, Any] = {"usage": usage} if usage is not None else {}
        return Completion(
            id=ident,
            object="text_completion",
            created=created,
            model=model,
            choices=choices,
            **fields,
        )

    def whole(ident, created, model, done, usage):
        choices = [
            CompletionChoice(index=index, text=text, finish_reason=finish, logprobs=None)
            for index, (text, finish) in enumerate(done)
        ]
        return build(ident, created, model, choices, usage)

    def chunk(ident, created, model, index, text, finish, first):
        if first:  # a completion stream has no role chunk: an empty piece of text
            text = ""
        choice = CompletionChoice.model_construct(
            index=index, text=text or "", finish_reason=finish, logprobs=None
        )
        return build(ident, created, model, [choice])

    def usage_chunk(ident, created, model, usage):
        return build(ident, created, model, [], usage)

    return answers.Shape("cmpl", whole, chunk, usage_chunk)


def create_app(desk: ServeDesk, key: str, log: RequestLog) -> FastAPI:
    """The API over `desk`, asking for `key`; `log` is told of every request answered."""
    app = FastAPI(title="sage-tui", docs_url=None, redoc_url=None, openapi_url=None)
    chat_shape, completion_shape = _chat_shape(), _completion_shape()
    keep: set[asyncio.Task[None]] = set()  # the recording tasks, until they are done
    app.state.recording = keep

    def finished(route: str, model: str, started: float) -> answers.Finished:
        def done(status: int, stats: ReplyStats | None) -> None:
            log(route, model, status, stats, time.monotonic() - started)
            task = asyncio.ensure_future(desk.served(model, route, status, stats))
            keep.add(task)
            task.add_done_callback(keep.discard)

        return done

    async def authorized(request: Request) -> None:
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if not given or scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "no API key given: send 'Authorization: Bearer <key>'"
                " (`sage-tui serve --show-key` prints it)",
                code="invalid_api_key",
            )
        if not same_key(token.strip(), key):
            raise ApiError(401, "incorrect API key", code="invalid_api_key")

    @app.exception_handler(ApiError)
    async def refused(request: Request, err: ApiError) -> JSONResponse:
        finished(request.url.path, "", time.monotonic())(err.status, None)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        return await refused(request, ApiError(500, describe_error(err), kind="server_error"))

    @app.exception_handler(HTTPException)
    async def not_found(request: Request, err: HTTPException) -> JSONResponse:
        error = ApiError(err.status_code, f"{request.method} {request.url.path}: {err.detail}")
        return JSONResponse(error.body(), status_code=err.status_code)

    def listing(record) -> dict[str, Any]:
        from openai.types import Model

        parent = {"parent": record.base_model} if record.kind == "adapter" else {}
        model = Model(
            id=record.name,
            created=int(record.created_at),
            object="model",
            owned_by="sage-tui",
            **parent,
        )
        return model.model_dump(mode="json", exclude_unset=True)

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        served = await asyncio.to_thread(desk.models)
        return {"object": "list", "data": [listing(record) for record in served]}

    @app.get("/v1/models/{name:path}", dependencies=[Depends(authorized)])
    async def model(name: str) -> dict[str, Any]:
        return listing(await _resolve(desk, name))

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat(request: Request) -> Any:
        started = time.monotonic()
        asked = chat_request(await _body(request))
        record = await _resolve(desk, asked.model)
        starts = [
            _starter(desk.reply, asked.messages, sampling, record.name)
            for sampling in answers.choice_samplings(asked)
        ]
        done = finished("/v1/chat/completions", record.name, started)
        return await _answer(chat_shape, record.name, starts, asked, done)

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def complete(request: Request) -> Any:
        started = time.monotonic()
        asked = completion_request(await _body(request))
        record = await _resolve(desk, asked.model)
        samplings = answers.choice_samplings(asked, len(asked.prompts))
        starts = [
            _starter(desk.complete, prompt, samplings[p * asked.n + i], record.name)
            for p, prompt in enumerate(asked.prompts)
            for i in range(asked.n)
        ]
        done = finished("/v1/completions", record.name, started)
        return await _answer(completion_shape, record.name, starts, asked, done)

    return app


def _starter(
    start: Callable[..., Awaitable[Reply]], what: Any, sampling: Any, model: str
) -> Callable[[], Awaitable[Reply]]:
    return lambda: start(what, sampling, model)


async def _answer(
    shape: answers.Shape,
    model: str,
    starts: list[Callable[[], Awaitable[Reply]]],
    asked: Generation,
    done: answers.Finished,
) -> Any:
    """Start the replies (a request the engine refuses is a 400), then stream or gather them."""
    try:
        replies = await answers.start_all(starts)
    except EngineStopped as err:
        raise answers.failure(err) from None
    except SageError as err:
        raise ApiError(400, str(err)) from None
    if asked.stream:
        events = answers.streamed(shape, model, replies, asked.n, asked.include_usage, done)
        return StreamingResponse(events, media_type="text/event-stream")
    try:
        return JSONResponse(await answers.whole(shape, model, replies, asked.n, done))
    except ApiError:
        raise
    except Exception as err:  # a reply that failed on its way
        raise answers.failure(err) from None


async def _resolve(desk: ServeDesk, name: str):
    try:
        return await asyncio.to_thread(desk.resolve, name)
    except NotServed as err:
        raise ApiError(404, str(err), param="model", code="model_not_found") from None


async def _body(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as err:
        raise ApiError(400, f"the request body is not JSON: {err}") from None
