"""OpenAI request bodies read into the studio's terms, and errors in OpenAI's shape.

The request parameters are validated against the `openai` package's own request types
(`CompletionCreateParamsBase` of chat completions and of completions, through pydantic); the
messages are checked here too, one by one, so an error names the message and what was
expected. A parameter this server cannot honour is refused with a 400 that names it when it is
set to anything but its default value, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from sage_tui.core.engines.base import Message, Sampling
from sage_tui.errors import SageError

MAX_CHOICES = 8
"""The most choices (`n`, times prompts for a completion) one request may ask for."""

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""Message roles taken, and the role the chat template gets ("developer" is OpenAI's newer
name for the system message)."""

_CHAT_UNSUPPORTED = {
    "tools": "tool calling",
    "tool_choice": "tool calling",
    "functions": "function calling",
    "function_call": "function calling",
    "parallel_tool_calls": "tool calling",
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "logit_bias": "logit bias",
    "presence_penalty": "presence penalty",
    "frequency_penalty": "frequency penalty",
    "audio": "audio output",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
}
_COMPLETION_UNSUPPORTED = {
    "echo": "echoing the prompt",
    "suffix": "a suffix (fill in the middle)",
    "logprobs": "log probabilities",
    "logit_bias": "logit bias",
    "presence_penalty": "presence penalty",
    "frequency_penalty": "frequency penalty",
}
_DEFAULTS: tuple[Any, ...] = (None, False, 0, 0.0, "", [], {}, "auto", "none", 1)


class ApiError(Exception):
    """A request refused: the HTTP status and OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (
            status,
            message,
            kind,
            param,
            code,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class Generation:
    """What a request asks for, in the studio's terms."""

    model: str
    sampling: Sampling
    n: int
    stream: bool
    include_usage: bool
    """Streaming: send a last chunk with the usage figures (`stream_options.include_usage`)."""


@dataclass(frozen=True)
class ChatRequest(Generation):
    messages: list[Message]


@dataclass(frozen=True)
class CompletionRequest(Generation):
    prompts: list[str]


@cache
def _validator(kind: str) -> Any:
    from pydantic import TypeAdapter

    if kind == "chat":
        from openai.types.chat.completion_create_params import CompletionCreateParamsBase
    else:
        from openai.types.completion_create_params import CompletionCreateParamsBase
    return TypeAdapter(CompletionCreateParamsBase)


def _validated(kind: str, body: object) -> dict[str, Any]:
    from pydantic import ValidationError

    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        _validator(kind).validate_python(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "missing":
            raise ApiError(400, f"'{where}' is required", param=where) from None
        raise ApiError(400, f"'{where}': {first['msg']}", param=where) from None
    return dict(body)


def _refuse_unsupported(body: Mapping[str, Any], unsupported: Mapping[str, str]) -> None:
    for name, what in unsupported.items():
        value = body.get(name)
        if not any(value == default and type(value) is type(default) for default in _DEFAULTS):
            raise ApiError(
                400,
                f"'{name}' ({what}) is not supported by this server; leave it out",
                param=name,
                code="unsupported_parameter",
            )


def _generation(body: Mapping[str, Any], prompts: int) -> dict[str, Any]:
    """The fields every request has; `prompts`: how many the choices are made for."""
    n = 1 if body.get("n") is None else body["n"]
    if n < 1 or n * prompts > MAX_CHOICES:
        raise ApiError(400, f"'n' times the prompts must be 1 to {MAX_CHOICES}", param="n")
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    defaults = Sampling()
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    sampling = Sampling(
        temperature=defaults.temperature
        if body.get("temperature") is None
        else float(body["temperature"]),
        top_p=defaults.top_p if body.get("top_p") is None else float(body["top_p"]),
        max_tokens=defaults.max_tokens if max_tokens is None else int(max_tokens),
        seed=body.get("seed"),
        stop=stops,
    )
    try:
        sampling.check()
    except SageError as err:
        raise ApiError(400, str(err)) from None
    options = body.get("stream_options") or {}
    return {
        "model": body["model"],
        "sampling": sampling,
        "n": n,
        "stream": bool(body.get("stream")),
        "include_usage": bool(options.get("include_usage")),
    }


def chat_request(body: object) -> ChatRequest:
    """A chat completion request read from its JSON body; ApiError when it cannot be served."""
    data = _validated("chat", body)
    _refuse_unsupported(data, _CHAT_UNSUPPORTED)
    fmt = data.get("response_format") or {}
    if fmt.get("type", "text") != "text":
        raise ApiError(
            400,
            f"response_format {fmt.get('type')!r} is not supported; only 'text'",
            param="response_format",
            code="unsupported_parameter",
        )
    if data.get("modalities") not in (None, ["text"]):
        raise ApiError(400, "only text output is supported", param="modalities")
    messages = [_message(index, m) for index, m in enumerate(data["messages"])]
    if not messages:
        raise ApiError(400, "'messages' is empty: send at least one", param="messages")
    return ChatRequest(messages=messages, **_generation(data, 1))


def _message(index: int, message: Mapping[str, Any]) -> Message:
    where = f"messages.{index}"
    role = message.get("role")
    if role not in ROLES:
        if role in ("tool", "function"):
            raise ApiError(
                400, f"{where}: '{role}' messages (tool calling) are not supported", param=where
            )
        raise ApiError(400, f"{where}: unknown role {role!r}", param=f"{where}.role")
    if message.get("tool_calls") or message.get("function_call"):
        raise ApiError(400, f"{where}: tool calls are not supported", param=where)
    content = message.get("content")
    if content is None:
        content = ""
    if not isinstance(content, str):
        pieces = []
        for number, part in enumerate(content):
            kind = part.get("type")
            if kind != "text":
                raise ApiError(
                    400,
                    f"{where}.content.{number}: '{kind}' parts are not supported: this server"
                    " serves text models",
                    param=f"{where}.content.{number}",
                )
            pieces.append(part.get("text", ""))
        content = "".join(pieces)
    return {"role": ROLES[role], "content": content}


def completion_request(body: object) -> CompletionRequest:
    """A (legacy) completion request read from its JSON body; ApiError when it cannot be."""
    data = _validated("completion", body)
    _refuse_unsupported(data, _COMPLETION_UNSUPPORTED)
    prompt = data["prompt"]
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    else:
        raise ApiError(400, "'prompt' must be a string or a list of strings", param="prompt")
    if not prompts or not all(prompts):
        raise ApiError(400, "'prompt' is empty: give some text to continue", param="prompt")
    best_of = data.get("best_of")
    if best_of not in (None, 1, data.get("n") or 1):
        raise ApiError(400, "'best_of' is not supported", param="best_of")
    return CompletionRequest(prompts=prompts, **_generation(data, len(prompts)))
