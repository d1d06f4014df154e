"""Dataset row formats: detection, conversion to chat examples, and validation.

Rows come in one of five formats, detected from their keys or named by the user:

- `messages`: `{"messages": [{"role": ..., "content": ...}, ...]}` (OpenAI / TRL style)
- `sharegpt`: `{"conversations": [{"from": ..., "value": ...}, ...]}`, optional `system`
- `alpaca`: `instruction`, optional `input`, `output`, optional `system` and `history`
- `prompt_completion`: `prompt`, `completion`
- `text`: `{"text": ...}`, plain text for continued pre-training

Each row is validated and converted to an `Example` (chat messages, or text); a row that
cannot be converted raises `InvalidRow` with the reason.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sage_tui.core.text_enum import TextEnum
from sage_tui.errors import SageError


class DatasetError(SageError):
    """A dataset file that cannot be used as it is; the message names the file and line."""


class InvalidRow(DatasetError):
    """One row that cannot be converted; the message is the reason, without file or line."""


class Format(TextEnum):
    """The row formats understood; the value is the name users type (`--format alpaca`)."""

    MESSAGES = "messages"
    SHAREGPT = "sharegpt"
    ALPACA = "alpaca"
    PROMPT_COMPLETION = "prompt_completion"
    TEXT = "text"


FORMATS: tuple[str, ...] = tuple(f.value for f in Format)
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

# Keys that make a row vote for a format, in priority order: a row holding `messages` and
# `text` is a chat row whose text is probably a rendering of it.
_MARKERS: dict[Format, tuple[str, ...]] = {
    Format.MESSAGES: ("messages",),
    Format.SHAREGPT: ("conversations",),
    Format.ALPACA: ("instruction", "output"),
    Format.PROMPT_COMPLETION: ("prompt", "completion"),
    Format.TEXT: ("text",),
}
_SHOWN_KEYS: dict[Format, str] = {
    Format.MESSAGES: "messages",
    Format.SHAREGPT: "conversations",
    Format.ALPACA: "instruction, input, output",
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

Message = dict[str, Any]
"""One chat turn: `role` and `content` (a string), and where the row had them `name`,
`tool_calls` (OpenAI style: `[{"type": "function", "function": {"name", "arguments"}}]`, the
content then may be empty) and `tool_call_id`."""


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
    """The format whose marker keys the row holds (the first in priority order), or None."""
    for fmt, keys in _MARKERS.items():
        if any(key in row for key in keys):
            return fmt
    return None


def json_type(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: object, limit: int = 30) -> str:
    shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def parse_format(name: str | Format) -> Format:
    """The Format called `name`; DatasetError listing the formats otherwise."""
    try:
        return Format(name)
    except ValueError:
        raise DatasetError(
            f"unknown dataset format {_show(name)} (expected one of: {', '.join(FORMATS)})"
        ) from None


def detect_format(rows: Sequence[object], *, source: str = "dataset") -> Format:
    """The format most of the first 20 object rows are in, judged by their keys.

    `source` names the file in the error raised when the rows are in no format understood or
    disagree with no clear majority.
    """
    objects = [row for row in rows if isinstance(row, dict)][:DETECT_ROWS]
    votes = Counter(marked_format(row) for row in objects)
    order = list(Format)
    ranked = sorted(
        ((fmt, n) for fmt, n in votes.items() if fmt is not None),
        key=lambda item: (-item[1], order.index(item[0])),
    )
    if ranked and ranked[0][1] * 2 > len(objects):
        return ranked[0][0]
    understood = "; ".join(f"{fmt.value} ({keys})" for fmt, keys in _SHOWN_KEYS.items())
    if len(ranked) > 1:
        seen = ", ".join(f"{fmt.value} ({n})" for fmt, n in ranked)
        raise DatasetError(
            f"{source}: cannot tell the format, the first {len(objects)} rows look like {seen};"
            f" pass --format (formats understood: {understood})"
        )
    keys = sorted({str(key) for row in objects for key in row})
    found = ", ".join(keys[:12]) + (f" and {len(keys) - 12} more" if len(keys) > 12 else "")
    raise DatasetError(
        f"{source}: cannot tell the format from the keys found ({found or 'none'});"
        f" formats understood: {understood}"
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


def _turns(row: Mapping[str, Any], key: str, roles: Mapping[str, str], noun: str) -> list[Message]:
    if key not in row or row[key] is None:
        raise InvalidRow(f"missing '{key}'")
    turns = row[key]
    if not isinstance(turns, list):
        raise InvalidRow(f"'{key}' must be a list, got {json_type(turns)}")
    if not turns:
        raise InvalidRow(f"'{key}' is empty")
    # Both spellings are accepted in both formats: datasets mix them more than they admit.
    speaker, body = ("from", "value") if key == "conversations" else ("role", "content")
    messages: list[Message] = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise InvalidRow(f"{noun} {number} must be an object, got {json_type(turn)}")
        role_key = speaker if speaker in turn else ("role" if speaker == "from" else "from")
        text_key = body if body in turn else ("content" if body == "value" else "value")
        if role_key not in turn:
            raise InvalidRow(f"{noun} {number} is missing '{speaker}'")
        if text_key not in turn:
            raise InvalidRow(f"{noun} {number} is missing '{body}'")
        raw_role, content = turn[role_key], turn[text_key]
        role = roles.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            expected = ", ".join(roles)
            label = "role" if role_key == "role" else "'from' value"
            raise InvalidRow(
                f"{noun} {number} has unknown {label} {_show(raw_role)} (expected {expected})"
            )
        if not isinstance(content, str):
            raise InvalidRow(
                f"{noun} {number}: '{text_key}' must be a string, got {json_type(content)}"
            )
        if not content.strip():
            raise InvalidRow(f"{noun} {number} has empty '{text_key}'")
        messages.append({"role": role, "content": content})
    return messages


def _check_conversation(messages: list[Message]) -> list[Message]:
    # Alternation is not enforced: system and tool turns legitimately break it.
    if not any(m["role"] == "user" for m in messages):
        raise InvalidRow("no user turn")
    if messages[-1]["role"] != "assistant":
        raise InvalidRow(f"last turn is '{messages[-1]['role']}', expected 'assistant'")
    return messages


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


def to_messages(row: object, fmt: str | Format) -> list[Message] | None:
    """Chat messages for one row of format `fmt`; None for a `text` row (see `to_example`).

    Raises InvalidRow, whose message is the reason (for instance "missing 'output'").
    """
    fmt = parse_format(fmt)
    if not isinstance(row, dict):
        raise InvalidRow(f"expected a JSON object, got {json_type(row)}")
    if fmt is Format.TEXT:
        _field(row, "text")
        return None
    if fmt is Format.MESSAGES:
        return _check_conversation(_turns(row, "messages", _MESSAGE_ROLES, "message"))
    if fmt is Format.SHAREGPT:
        turns = _turns(row, "conversations", _SHAREGPT_ROLES, "turn")
        system = [] if turns[0]["role"] == "system" else _system(row)
        return _check_conversation(system + turns)
    if fmt is Format.PROMPT_COMPLETION:
        prompt, completion = _field(row, "prompt"), _field(row, "completion")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    # Alpaca: a missing instruction is tolerated when the input carries the request.
    if "instruction" not in row and "input" not in row:
        raise InvalidRow("missing 'instruction'")
    instruction = _field(row, "instruction", required=False) or ""
    extra = _field(row, "input", required=False) or ""
    output = _field(row, "output")
    parts = [part for part in (instruction, extra) if part.strip()]
    if not parts:
        raise InvalidRow("empty 'instruction'")
    return [
        *_system(row),
        *_history(row),
        {"role": "user", "content": "\n\n".join(parts)},
        {"role": "assistant", "content": output},
    ]


def to_example(row: object, fmt: str | Format, *, line: int = 0) -> Example:
    """One row of format `fmt` as an Example; raises InvalidRow with the reason."""
    fmt = parse_format(fmt)
    messages = to_messages(row, fmt)
    if messages is None:
        return Example(text=row["text"], line=line)  # type: ignore[index]
    return Example(messages=messages, line=line)
