"""Chat turns as rows hold them (OpenAI `messages`, ShareGPT `conversations`), made into the
messages an Example carries.

Both spellings of a turn are read in both formats (`role`/`content` and `from`/`value`):
datasets mix them more than they admit. A turn may carry `name`, an assistant turn
`tool_calls` (its content then may be null or empty) and a 0/1 `weight`, a tool turn
`tool_call_id`; `content` may be a list of typed parts, of which only text can be trained.
A ShareGPT `function_call` turn whose value is a JSON call (`{"name", "arguments"}`, or a list
of them) becomes an assistant turn with `tool_calls`. A row's `tools` (a list, or the JSON
string exports write) are the function definitions the conversation may call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sage_tui.core.data.errors import InvalidRow, json_type, show

Message = dict[str, Any]
"""One chat turn: `role` and `content` (a string), and where the row had them `name`,
`tool_calls` (OpenAI style: `[{"type": "function", "function": {"name", "arguments"}}]`, the
content then may be empty) and `tool_call_id`."""

Weight = float | None
"""A turn's `weight` as the row gave it (0 or 1), or None where it gave none."""

MAX_NESTING = 64
"""The deepest nesting of objects and lists kept from a row's tool arguments and tools; more is
refused (the values are walked recursively later, and no real schema comes near it)."""


def _too_deep(value: object) -> bool:
    """True when `value` nests lists and objects more than MAX_NESTING deep (found without
    recursion, so the check itself cannot overflow)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth >= MAX_NESTING:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _call(call: object, where: str) -> dict[str, Any]:
    """One tool call in OpenAI style; the arguments as the row holds them (string or object)."""
    if not isinstance(call, dict):
        raise InvalidRow(f"{where} must be an object, got {json_type(call)}")
    # Null fields are what Arrow files hold where a row has none: read them as absent.
    kind = call.get("type") or "function"
    if kind != "function":
        raise InvalidRow(f"{where} is of type {show(kind)}; only function calls are understood")
    function = call.get("function") or call
    if not isinstance(function, dict):
        raise InvalidRow(f"{where}: 'function' must be an object, got {json_type(function)}")
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRow(f"{where} has no function 'name'")
    arguments = function.get("arguments")
    arguments = {} if arguments is None else arguments
    if not isinstance(arguments, (str, dict)):
        raise InvalidRow(
            f"{where}: 'arguments' must be a JSON string or an object, got {json_type(arguments)}"
        )
    if _too_deep(arguments):
        raise InvalidRow(f"{where}: 'arguments' nest more than {MAX_NESTING} levels deep")
    made: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if isinstance(call.get("id"), str) and call["id"]:
        made["id"] = call["id"]
    return made


def _calls(value: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidRow(f"{where}: 'tool_calls' must be a list, got {json_type(value)}")
    return [_call(call, f"{where}: tool call {n}") for n, call in enumerate(value, start=1)]


def _parsed_call(value: str) -> list[dict[str, Any]] | None:
    """The tool calls a ShareGPT `function_call` value spells as JSON, or None when it does
    not (it then stays a text turn)."""
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        return None
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and "arguments" in c for c in calls
    ):
        return None
    try:
        return [_call(c, "call") for c in calls]
    except InvalidRow:
        return None


def _text(content: object, where: str, key: str) -> str | None:
    """The text of a turn's content: a string, or typed parts joined; None for null."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list) or not all(isinstance(part, dict) for part in content):
        # Not typed parts either (a list of strings, say): say what is expected first.
        raise InvalidRow(f"{where}: '{key}' must be a string, got {json_type(content)}")
    texts: list[str] = []
    for number, part in enumerate(content, start=1):
        kind = part.get("type")
        if kind is None:
            raise InvalidRow(
                f'{where}: content part {number} has no \'type\' (text parts are {{"type": "text",'
                ' "text": ...})'
            )
        if kind != "text":
            raise InvalidRow(
                f"{where}: content part {number} is of type {show(kind)}; only text parts can"
                " be trained (sage-tui trains text-only models)"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRow(
                f"{where}: content part {number}: 'text' must be a string, got {json_type(text)}"
            )
        texts.append(text)
    return "".join(texts)


def _weight(turn: Mapping[str, Any], role: str, where: str) -> Weight:
    value = turn.get("weight")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
        shown = json.dumps(value) if isinstance(value, (bool, int, float)) else json_type(value)
        raise InvalidRow(f"{where}: 'weight' must be 0 or 1, got {shown}")
    if role != "assistant":
        if value == 1:
            raise InvalidRow(
                f"{where}: 'weight' 1 on a {role} turn; only assistant turns carry loss"
            )
        return None  # says what is so anyway: a non-assistant turn carries no loss
    return float(value)


def turns(
    row: Mapping[str, Any], key: str, roles: Mapping[str, str], noun: str
) -> tuple[list[Message], list[Weight]]:
    """The messages of the turn list `row[key]`, with each turn's weight (None: not given).

    `roles` maps the row's role names to ours; `noun` names a turn in messages ("message 3").
    A `weight` of 0 on a non-assistant turn is ignored (such turns never carry loss); a
    weight of 1 there, or any weight but 0 or 1, is refused.
    """
    if key not in row or row[key] is None:
        raise InvalidRow(f"missing '{key}'")
    listed = row[key]
    if not isinstance(listed, list):
        raise InvalidRow(f"'{key}' must be a list, got {json_type(listed)}")
    if not listed:
        raise InvalidRow(f"'{key}' is empty")
    speaker, body = ("from", "value") if key == "conversations" else ("role", "content")
    messages: list[Message] = []
    weights: list[Weight] = []
    for number, turn in enumerate(listed, start=1):
        where = f"{noun} {number}"
        if not isinstance(turn, dict):
            raise InvalidRow(f"{where} must be an object, got {json_type(turn)}")
        role_key = speaker if speaker in turn else ("role" if speaker == "from" else "from")
        text_key = body if body in turn else ("content" if body == "value" else "value")
        if role_key not in turn:
            raise InvalidRow(f"{where} is missing '{speaker}'")
        raw_role = turn[role_key]
        role = roles.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            label = "role" if role_key == "role" else "'from' value"
            raise InvalidRow(
                f"{where} has unknown {label} {show(raw_role)} (expected {', '.join(roles)})"
            )
        calls: list[dict[str, Any]] | None = None
        if "tool_calls" in turn and turn["tool_calls"] is not None:
            if role != "assistant":
                raise InvalidRow(f"{where}: 'tool_calls' are only for assistant turns")
            calls = _calls(turn["tool_calls"], where) or None
        if text_key not in turn and calls is None:
            raise InvalidRow(f"{where} is missing '{body}'")
        content = _text(turn.get(text_key), where, text_key)
        if raw_role == "function_call" and content is not None and calls is None:
            calls = _parsed_call(content)
            content = "" if calls is not None else content
        if content is None and calls is None:
            raise InvalidRow(f"{where}: '{text_key}' must be a string, got null")
        if calls is None and not (content or "").strip():
            raise InvalidRow(f"{where} has empty '{text_key}'")
        message: Message = {"role": role, "content": content or ""}
        for extra in ("name", "tool_call_id"):
            if turn.get(extra) not in (None, ""):
                if not isinstance(turn[extra], str):
                    raise InvalidRow(
                        f"{where}: '{extra}' must be a string, got {json_type(turn[extra])}"
                    )
                message[extra] = turn[extra]
        if calls is not None:
            message["tool_calls"] = calls
        messages.append(message)
        weights.append(_weight(turn, role, where))
    return messages, weights


def turn_weights(messages: Sequence[Message], given: Sequence[Weight]) -> tuple[float, ...] | None:
    """The Example's weights for `messages` whose turns gave `given` (aligned at the end, so
    turns added before the row's own, such as a top-level system prompt, count as not given):
    None when no turn gave one; else each assistant turn its weight (1 when not given), every
    other turn 0."""
    if all(weight is None for weight in given):
        return None
    padded = [None] * (len(messages) - len(given)) + list(given)
    return tuple(
        (1.0 if weight is None else weight) if message["role"] == "assistant" else 0.0
        for message, weight in zip(messages, padded, strict=True)
    )


def check_conversation(messages: list[Message]) -> list[Message]:
    """`messages`, checked to hold a user turn and to end on an assistant turn."""
    # Alternation is not enforced: system and tool turns legitimately break it.
    if not any(m["role"] == "user" for m in messages):
        raise InvalidRow("no user turn")
    if messages[-1]["role"] != "assistant":
        raise InvalidRow(f"last turn is '{messages[-1]['role']}', expected 'assistant'")
    return messages


def row_tools(row: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The function definitions in the row's `tools` (a list, or a JSON string holding one);
    None when there are none."""
    tools = row.get("tools")
    if tools is None or tools == "" or tools == []:
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except (json.JSONDecodeError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            raise InvalidRow(f"'tools' is a string that is not valid JSON ({reason})") from None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise InvalidRow(f"'tools' must be a list of function definitions, got {json_type(tools)}")
    for number, tool in enumerate(tools, start=1):
        if not isinstance(tool, dict):
            raise InvalidRow(f"tool {number} must be an object, got {json_type(tool)}")
        if _too_deep(tool):
            raise InvalidRow(f"tool {number} nests more than {MAX_NESTING} levels deep")
    return tools or None
