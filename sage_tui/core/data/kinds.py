"""Which dataset rows are supervised fine-tuning data, and what the others are.

sage-tui trains supervised fine-tuning only: every row is one conversation (or text) whose
replies are all to be learnt. Files made for other training carry keys a supervised format
also reads, so a row converted by its first format marker could train on the wrong thing (an
Alpaca row whose `output` is the rejected answer of a preference pair). `refused_kind` looks
at every key of a row and names what it is instead:

- preference pairs: `chosen` / `rejected` (DPO, ORPO, reward models), whatever is beside them;
- KTO-style labelled rows: a true/false `label` beside a prompt or conversation, or
  LLaMA-Factory's `kto_tag`;
- reward or ranking data: an `output` / `response` / `completion` holding a list of answers or
  a number, or a list of answers (`responses`, `completions`, `outputs`, `candidates`);
- multimodal rows: non-empty `images` / `videos` / `audios`, an `<image>` / `<video>` /
  `<audio>` mark in the text, or a content part of another type than text.

Each kind says what it is, per row (`RowKind.reason`) and for a whole file
(`RowKind.file_message`), with what sage-tui would need and a `jq` line that makes it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sage_tui.core.data.errors import json_type

_SFT_ONLY = "sage-tui trains supervised fine-tuning only"
_MEDIA_KEYS = ("images", "videos", "audios", "image", "video", "audio")
_MEDIA_MARK = re.compile(r"<(image|video|audio)>")
_REPLY_KEYS = ("output", "response", "completion")
_ANSWER_LISTS = ("responses", "completions", "outputs", "candidates")
_TURN_LISTS = ("messages", "conversations", "prompt", "completion", "chosen", "rejected")
_TEXT_HOLDERS = frozenset({*_TURN_LISTS, "history"})
_RARE_KEYS = frozenset({"kto_tag", "label", *_ANSWER_LISTS, *_MEDIA_KEYS})
_CHAT_KEYS = ("messages", "conversations", "prompt", "completion", "instruction", "output")


@dataclass(frozen=True)
class RowKind:
    """A kind of row that is not supervised chat data, found in one row."""

    name: str
    """What such rows are, plural: "preference pairs (chosen / rejected)"."""
    one: str
    """What one such row is: "a preference pair (chosen / rejected)"."""
    detail: str
    """What in this row shows it: "'output' holds a list of 2, not one reply"; may be empty."""
    need: str
    """What sage-tui would need instead, after "which needs"."""
    todo: str
    """What to do about it, in words: "keep the chosen reply"."""
    fix: str = ""
    """A jq filter that does it to one row, or "" when there is none."""
    hint: str = ""
    """Another way out, said last ("or load it with the column mapping output=chosen")."""

    @property
    def reason(self) -> str:
        """Why one row is refused (an invalid row's reason, without file or line)."""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.one}{detail}, not supervised chat data ({_SFT_ONLY})"

    def file_message(self, source: str, where: str, name: str | None, in_array: bool) -> str:
        """Why the file `source` is refused, the row found at `where` ("line 3"); `name` is
        the file's name for the jq line (None: no jq line, for files jq cannot read),
        `in_array` whether its rows are a JSON array."""
        detail = f" ({self.detail})" if self.detail else ""
        jq = ""
        if self.fix and name is not None:
            each = ".[] | " if in_array else ""
            target = shlex.quote(name.rsplit(".", 1)[0] + "-sft.jsonl")
            jq = f", for instance with jq -c '{each}{self.fix}' {shlex.quote(name)} > {target}"
        hint = f", {self.hint}" if self.hint else ""
        return (
            f"{source}: {where}: these rows are {self.name}{detail}; {_SFT_ONLY},"
            f" which needs {self.need}: {self.todo}{jq}{hint}"
        )


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


def _is_turns(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, dict) and ("role" in t or "from" in t) for t in value)
    )


def _preference(row: Mapping[str, Any]) -> RowKind:
    chosen = row.get("chosen")
    keep = ("chosen", "rejected")
    fix, hint = "", ""
    if isinstance(chosen, dict) and isinstance(row.get("conversations"), list):
        fix = ".conversations += [.chosen]"
    elif isinstance(chosen, dict) and isinstance(row.get("messages"), list):
        fix = ".messages += [.chosen]"
    elif isinstance(chosen, list) and _is_turns(row.get("prompt")):
        fix, keep = ".messages = (.prompt + .chosen)", ("prompt", *keep)
    elif isinstance(chosen, list):
        fix, hint = ".messages = .chosen", "or load it with the column mapping messages=chosen"
    elif "instruction" in row or "input" in row:
        fix, hint = ".output = .chosen", "or load it with the column mapping output=chosen"
    elif "prompt" in row:
        fix = ".completion = .chosen"
        hint = "or load it with the column mapping completion=chosen"
    elif "chosen" in row:
        fix = ".output = .chosen"
    if fix:
        fix += " | del(" + ", ".join(f".{key}" for key in keep) + ")"
    return RowKind(
        name="preference pairs (chosen / rejected)",
        one="a preference pair (chosen / rejected)",
        detail="",
        need="one reply per row to learn",
        todo="keep the chosen reply",
        fix=fix,
        hint=hint,
    )


def _labelled(row: Mapping[str, Any]) -> RowKind | None:
    if row.get("kto_tag") is not None:
        key = "kto_tag"
    elif isinstance(row.get("label"), bool) and any(k in row for k in _CHAT_KEYS):
        key = "label"
    else:
        return None
    return RowKind(
        name="KTO-style labelled examples",
        one="a KTO-style labelled example",
        detail=f"'{key}' marks each reply as good or bad",
        need="replies that are all to be learnt",
        todo="keep the rows marked true, without the mark",
        fix=f"select(.{key} == true) | del(.{key})",
    )


def _ranked_reply(key: str, value: Any) -> RowKind | None:
    """The kind a reply that is not a string shows: a list of answers, or a score."""
    if isinstance(value, list) and not (key == "completion" and _is_turns(value)):
        return RowKind(
            name="ranked answers, data for reward modelling or ranking",
            one="a row of ranked answers",
            detail=f"'{key}' holds a list of {len(value)}, not one reply",
            need="one reply per row",
            todo=f"keep the best answer as '{key}' (if it comes first)",
            fix=f".{key} |= .[0]",
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return RowKind(
            name="scored replies, data for reward modelling",
            one="a scored reply",
            detail=f"'{key}' holds a number, not a reply",
            need="one reply per row",
            todo=f"put the reply's text in '{key}'",
        )
    return None


def _answer_list(row: Mapping[str, Any]) -> RowKind | None:
    for key in _ANSWER_LISTS:
        value = row.get(key)
        if isinstance(value, list) and len(value) > 1:
            return RowKind(
                name="ranked answers, data for reward modelling or ranking",
                one="a row of ranked answers",
                detail=f"'{key}' holds {len(value)} answers and no single reply",
                need="one reply per row",
                todo="keep the best answer as 'output' (if it comes first)",
                fix=f".output = .{key}[0] | del(.{key})",
            )
    return None


def _texts_and_parts(row: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    """The row's text (top-level strings, turn contents, text parts, `history` pairs) and its
    typed content parts, found where the formats read them (not in every nested value: that
    would cost more than reading the row)."""
    texts = [value for value in row.values() if isinstance(value, str)]
    parts: list[Any] = []
    if row.keys().isdisjoint(_TEXT_HOLDERS):
        return texts, parts
    contents: list[Any] = []
    for key in _TURN_LISTS:
        turns = row.get(key)
        turns = [turns] if isinstance(turns, dict) else turns
        if isinstance(turns, list):
            for turn in turns:
                if isinstance(turn, dict):
                    contents += (turn.get("content"), turn.get("value"))
    history = row.get("history")
    if isinstance(history, list):
        for pair in history:
            if isinstance(pair, list):
                contents += pair
    for content in contents:
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                parts.append(part)
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return texts, parts


_NEED_TEXT = "text-only rows (it trains text-only models)"


def _multimodal(detail: str, todo: str, fix: str = "") -> RowKind:
    return RowKind(
        name="multimodal",
        one="a multimodal row",
        detail=detail,
        need=_NEED_TEXT,
        todo=todo,
        fix=fix,
    )


def _media(row: Mapping[str, Any]) -> RowKind | None:
    """The kind a row with media files beside its text shows."""
    for key in _MEDIA_KEYS:
        if key in row and _present(row[key]):
            value = row[key]
            if isinstance(value, list):
                held = f"{len(value)} item{'' if len(value) == 1 else 's'}"
            else:
                held = f"a {json_type(value)}"
            return _multimodal(
                f"'{key}' holds {held}",
                f"leave out the rows that hold {key.rstrip('s')}s",
                f"select((.{key} // []) | length == 0) | del(.{key})",
            )
    return None


def _media_in_text(row: Mapping[str, Any]) -> RowKind | None:
    """The kind a row whose text refers to media shows: typed parts, or <image> marks."""
    texts, parts = _texts_and_parts(row)
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(kind, str) and kind != "text":
            return _multimodal(
                f"a content part of type {kind!r}",
                "leave out the rows with content parts other than text",
            )
    for text in texts:
        mark = _MEDIA_MARK.search(text) if "<" in text else None
        if mark:
            return _multimodal(
                f"the text holds the {mark.group(0)} mark of {mark.group(1)} input",
                f"leave out the rows whose text holds {mark.group(0)}",
                f'select(tojson | contains("{mark.group(0)}") | not)',
            )
    return None


def refused_kind(row: object) -> RowKind | None:
    """The kind of row `row` is when it is not supervised chat data, or None when it may be.

    Every key of the row is looked at, whatever format its other keys suggest.
    """
    if not isinstance(row, dict):
        return None
    # Null fields are what Arrow files hold where a row has none: read them as absent.
    if row.get("chosen") is not None or row.get("rejected") is not None:
        return _preference(row)
    # The checks most rows pass are the cheap ones: a glance at the keys first.
    if not row.keys().isdisjoint(_RARE_KEYS):
        kind = _labelled(row) or _answer_list(row) or _media(row)
        if kind is not None:
            return kind
    for key in _REPLY_KEYS:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            kind = _ranked_reply(key, value)
            if kind is not None:
                return kind
    return _media_in_text(row)
