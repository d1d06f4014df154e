"""Dataset row formats: detection, conversion to chat examples, and validation.

Rows come in one of five formats, detected from their keys or named by the user:

- `messages`: `{"messages": [{"role": ..., "content": ...}, ...]}` (OpenAI / TRL style), with
  `name`, `tool_calls`, `tool_call_id`, a 0/1 `weight` on assistant turns, text content parts
  and a top-level `tools` (see `chat`)
- `sharegpt`: `{"conversations": [{"from": ..., "value": ...}, ...]}`, optional `system` and
  `tools`; `function_call` turns holding a JSON call become assistant tool calls
- `alpaca`: `instruction`, optional `input`, `output`, optional `system` and `history`; Dolly's
  `instruction`, `context`, `response` too (`context` is the input, `category` is ignored)
- `prompt_completion`: `prompt`, `completion` (strings, or TRL's lists of messages; then only
  the completion carries loss)
- `text`: `{"text": ...}`, plain text for continued pre-training

Rows that are not supervised chat data (preference pairs, KTO labels, rankings, multimodal
rows) are refused whatever their format (`kinds`). Each row is validated and converted to an
`Example` (chat messages, or text); a row that cannot be converted raises `InvalidRow` with
the reason.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sage_tui.core.data.chat import (
    Message,
    check_conversation,
    row_tools,
    turn_weights,
    turns,
)
from sage_tui.core.data.errors import DatasetError, InvalidRow, json_type, show
from sage_tui.core.data.kinds import refused_kind
from sage_tui.core.text_enum import TextEnum

__all__ = [
    "DETECT_ROWS",
    "FORMATS",
    "ROLES",
    "DatasetError",
    "Example",
    "Format",
    "InvalidRow",
    "Message",
    "detect_format",
    "json_type",
    "marked_format",
    "parse_format",
    "to_example",
    "to_messages",
]


class Format(TextEnum):
    """The row formats understood; the value is the name users type (`--format alpaca`)."""

    MESSAGES = "messages"
    SHAREGPT = "sharegpt"
    ALPACA = "alpaca"
    PROMPT_COMPLETION = "prompt_completion"
    TEXT = "text"


FORMATS: tuple[str, ...] = tuple(f.value for f in Format)
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

_SHOWN_KEYS: dict[Format, str] = {
    Format.MESSAGES: "messages",
    Format.SHAREGPT: "conversations",
    Format.ALPACA: "instruction, input, output; or instruction, context, response",
    Format.PROMPT_COMPLETION: "prompt, completion",
    Format.TEXT: "text",
}
DETECT_ROWS = 20
"""Rows whose keys decide the format when none is named."""

_MESSAGE_ROLES: dict[str, str] = {role: role for role in ROLES}
_SHAREGPT_ROLES: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    # Tool calls train the assistant to emit them; results come back as tool turns.
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}


@dataclass(frozen=True)
class Example:
    """One training example: chat `messages`, or plain `text` for continued pre-training."""

    messages: list[Message] | None = None
    text: str | None = None
    line: int = 0  # where the row starts in its file (1-based; 0 when not from a file)
    tools: list[dict[str, Any]] | None = None
    """Function definitions the conversation may call (the chat template's `tools`)."""
    weights: tuple[float, ...] | None = None
    """One per message: 0 marks a turn that carries no loss; None: every assistant turn
    carries loss."""

    @property
    def is_text(self) -> bool:
        """True for a plain-text example."""
        return self.messages is None

    def record(self) -> dict[str, Any]:
        """The JSON object written for this example: `{"messages": [...]}` or `{"text": ...}`."""
        if self.messages is None:
            return {"text": self.text}
        record: dict[str, Any] = {"messages": [dict(m) for m in self.messages]}
        if self.tools is not None:
            record["tools"] = self.tools
        if self.weights is not None:
            record["weights"] = list(self.weights)
        return record


def marked_format(row: Mapping[str, Any]) -> Format | None:
    """The format the row's keys mark, or None.

    A chat list wins over everything beside it (a row holding `messages` and `text` is a chat
    row whose text is probably a rendering of it); an `instruction` makes Alpaca; a `prompt`
    with a `completion` (or `response`) makes prompt-completion; an `output` or `response`
    without them is Alpaca whose input carries the request. Whether the row is supervised
    data at all is `kinds.refused_kind`'s to say.
    """
    if "messages" in row:
        return Format.MESSAGES
    if "conversations" in row:
        return Format.SHAREGPT
    if "instruction" in row:
        return Format.ALPACA
    if "prompt" in row and ("completion" in row or "response" in row):
        return Format.PROMPT_COMPLETION
    if "output" in row or "response" in row:
        return Format.ALPACA
    if "prompt" in row or "completion" in row:
        return Format.PROMPT_COMPLETION
    if "text" in row:
        return Format.TEXT
    return None


def parse_format(name: str | Format) -> Format:
    """The Format called `name`; DatasetError listing the formats otherwise."""
    try:
        return Format(name)
    except ValueError:
        raise DatasetError(
            f"unknown dataset format {show(name)} (expected one of: {', '.join(FORMATS)})"
        ) from None


def shown_formats() -> str:
    """The formats understood with their keys, for messages."""
    return "; ".join(f"{fmt.value} ({keys})" for fmt, keys in _SHOWN_KEYS.items())


def detect_format(rows: Sequence[object], *, source: str = "dataset") -> Format:
    """The format most of the first 20 object rows are in, judged by their keys.

    `source` names the file in the error raised when the rows are in no format understood or
    disagree with no clear majority, or when one of them is not supervised chat data (a
    preference pair, for instance: see `kinds`).
    """
    objects = [row for row in rows if isinstance(row, dict)][:DETECT_ROWS]
    for number, row in enumerate(objects, start=1):
        kind = refused_kind(row)
        if kind is not None:
            # The jq line needs a file jq reads; "dataset" (no file) gets none.
            name = os.path.basename(source) if source.endswith((".json", ".jsonl")) else None
            raise DatasetError(kind.file_message(source, f"row {number}", name, False))
    votes = Counter(marked_format(row) for row in objects)
    order = list(Format)
    ranked = sorted(
        ((fmt, n) for fmt, n in votes.items() if fmt is not None),
        key=lambda item: (-item[1], order.index(item[0])),
    )
    if ranked and ranked[0][1] * 2 > len(objects):
        return ranked[0][0]
    if len(ranked) > 1:
        seen = ", ".join(f"{fmt.value} ({n})" for fmt, n in ranked)
        raise DatasetError(
            f"{source}: cannot tell the format, the first {len(objects)} rows look like {seen};"
            f" pass --format (formats understood: {shown_formats()})"
        )
    keys = sorted({str(key) for row in objects for key in row})
    found = ", ".join(keys[:12]) + (f" and {len(keys) - 12} more" if len(keys) > 12 else "")
    raise DatasetError(
        f"{source}: cannot tell the format from the keys found ({found or 'none'});"
        f" formats understood: {shown_formats()}"
    )


def _field(row: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    if key not in row or row[key] is None:
        if required:
            raise InvalidRow(f"missing '{key}'")
        return None
    value = row[key]
    if not isinstance(value, str):
        raise InvalidRow(f"'{key}' must be a string, got {json_type(value)}")
    if required and not value.strip():
        raise InvalidRow(f"empty '{key}'")
    return value


def _system(row: Mapping[str, Any]) -> list[Message]:
    system = _field(row, "system", required=False)
    return [{"role": "system", "content": system}] if system and system.strip() else []


def _history(row: Mapping[str, Any]) -> list[Message]:
    history = row.get("history")
    if history is None or history == "":
        return []
    if not isinstance(history, list):
        raise InvalidRow(
            f"'history' must be a list of [question, answer] pairs, got {json_type(history)}"
        )
    messages: list[Message] = []
    for number, pair in enumerate(history, start=1):
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not all(isinstance(part, str) and part.strip() for part in pair)
        ):
            raise InvalidRow(
                f"history pair {number} must be two non-empty strings [question, answer]"
            )
        messages += [
            {"role": "user", "content": pair[0]},
            {"role": "assistant", "content": pair[1]},
        ]
    return messages


def _reply_key(row: Mapping[str, Any], *keys: str) -> str:
    """The first of `keys` the row holds (the reply's key), else the first."""
    return next((key for key in keys if key in row and row[key] is not None), keys[0])


def _alpaca(row: Mapping[str, Any], line: int) -> Example:
    # A missing instruction is tolerated when the input carries the request.
    if "instruction" not in row and "input" not in row and "context" not in row:
        raise InvalidRow("missing 'instruction'")
    instruction = _field(row, "instruction", required=False) or ""
    extra = _field(row, _reply_key(row, "input", "context"), required=False) or ""
    output = _field(row, _reply_key(row, "output", "response"))
    parts = [part for part in (instruction, extra) if part.strip()]
    if not parts:
        raise InvalidRow("empty 'instruction'")
    messages = [
        *_system(row),
        *_history(row),
        {"role": "user", "content": "\n\n".join(parts)},
        {"role": "assistant", "content": output},
    ]
    return Example(messages=messages, line=line)


def _prompt_completion(row: Mapping[str, Any], line: int) -> Example:
    completion_key = _reply_key(row, "completion", "response")
    prompt, completion = row.get("prompt"), row.get(completion_key)
    if not isinstance(prompt, list) and not isinstance(completion, list):
        prompt_text, reply = _field(row, "prompt"), _field(row, completion_key)
        messages = [
            {"role": "user", "content": prompt_text},
            {"role": "assistant", "content": reply},
        ]
        return Example(messages=messages, line=line)
    # TRL's conversational prompt-completion: lists of messages, the loss on the completion.
    for key in ("prompt", completion_key):
        if not isinstance(row.get(key), list):
            raise InvalidRow(
                f"'{key}' must be a list of messages like the other, got {json_type(row.get(key))}"
            )
    asked, asked_weights = turns(row, "prompt", _MESSAGE_ROLES, "prompt message")
    replied, _ = turns(row, completion_key, _MESSAGE_ROLES, "completion message")
    if any(w is not None for w in asked_weights):
        raise InvalidRow("'weight' on a prompt message: only the completion carries loss")
    if not any(m["role"] == "assistant" for m in replied):
        raise InvalidRow("the completion holds no assistant turn")
    messages = check_conversation(asked + replied)
    weights = [0.0] * len(asked) + [1.0 if m["role"] == "assistant" else 0.0 for m in replied]
    return Example(messages=messages, line=line, tools=row_tools(row), weights=tuple(weights))


def _chat(row: Mapping[str, Any], fmt: Format, line: int) -> Example:
    if fmt is Format.MESSAGES:
        messages, given = turns(row, "messages", _MESSAGE_ROLES, "message")
    else:
        messages, given = turns(row, "conversations", _SHAREGPT_ROLES, "turn")
        if messages[0]["role"] != "system":
            messages = _system(row) + messages
    return Example(
        messages=check_conversation(messages),
        line=line,
        tools=row_tools(row),
        weights=turn_weights(messages, given),
    )


def _converted(row: object, fmt: Format, line: int = 0) -> Example:
    if not isinstance(row, dict):
        raise InvalidRow(f"expected a JSON object, got {json_type(row)}")
    kind = refused_kind(row)
    if kind is not None:
        raise InvalidRow(kind.reason)
    if fmt is Format.TEXT:
        return Example(text=_field(row, "text"), line=line)
    if fmt in (Format.MESSAGES, Format.SHAREGPT):
        return _chat(row, fmt, line)
    if fmt is Format.PROMPT_COMPLETION:
        return _prompt_completion(row, line)
    return _alpaca(row, line)


def to_messages(row: object, fmt: str | Format) -> list[Message] | None:
    """Chat messages for one row of format `fmt`; None for a `text` row (see `to_example`,
    which keeps the row's tools and turn weights too).

    Raises InvalidRow, whose message is the reason (for instance "missing 'output'").
    """
    return _converted(row, parse_format(fmt)).messages


def to_example(row: object, fmt: str | Format, *, line: int = 0) -> Example:
    """One row of format `fmt` as an Example; raises InvalidRow with the reason."""
    return _converted(row, parse_format(fmt), line)
