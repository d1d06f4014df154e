"""Which tokens of an example the model learns from: token ids with their labels.

A chat example trains on its assistant replies only: system, user and tool turns are the
prompt and carry no loss (label -100), every assistant turn of a conversation counts, and a
turn whose weight is 0 does not. `train_on_prompts` trains on every token instead. Text rows
(continued pre-training) train on all their tokens plus the EOS that TRL appends to them.

The replies are found through the model's own chat template, whatever it is (no table of
models): the conversation is rendered whole, then for each assistant turn up to it with the
generation prompt and up to it with its reply. When each rendering extends the previous one
and the whole, the characters between are the reply as the template writes it (its
end-of-turn token included, the whitespace after it not). A turn the template renders
differently once later ones follow (Qwen3 writes an empty reasoning block before the last
reply only; some templates drop earlier reasoning) is found instead by its content in the
whole text, after the turns before it; a reply found neither way refuses the row with the
way out (train on prompts). Characters become tokens through a fast tokenizer's
offsets: a token carries loss when its characters overlap a reply.

Nothing heavy is imported here: the tokenizer is handed in by the caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sage_tui.core.data.formats import DatasetError, Example, Message
from sage_tui.core.data.special_tokens import strip_special_tokens

IGNORED = -100
"""The label of a token that carries no loss (what the loss functions skip)."""

_TOOLS_IN_TEMPLATE = re.compile(r"\btools\b|\btool_calls\b")


@dataclass(frozen=True)
class TokenizedExample:
    """One example as the trainer gets it: token ids, and labels (IGNORED where no loss)."""

    input_ids: list[int]
    labels: list[int]
    line: int
    """Where the row starts in its file (0 when not from a file)."""
    text: str
    """The example as rendered (chat template applied, literal special tokens stripped when
    asked), before truncation."""
    length: int
    """Tokens before truncation."""
    truncated: bool
    """The example was longer than max_length and was cut (its start kept)."""
    trained: int
    """Tokens kept that carry loss."""
    masked: int
    """Tokens kept that carry none."""
    trained_in_full: int
    """Tokens that would carry loss without truncation."""

    @property
    def dropped(self) -> bool:
        """No token carries loss: training must leave the row out (a batch of such rows has no
        label, and its loss is NaN)."""
        return self.trained == 0

    def record(self) -> dict[str, list[int]]:
        """The JSON object written for the trainer: `{"input_ids": [...], "labels": [...]}`."""
        return {"input_ids": self.input_ids, "labels": self.labels}


@dataclass
class MaskTally:
    """Figures over many tokenized examples, added one at a time (for streaming)."""

    rows: int = 0
    trained: int = 0
    """Tokens carrying loss, over the rows kept."""
    masked: int = 0
    """Tokens carrying none, over the rows kept."""
    truncated: int = 0
    """Rows cut at max_length (the dropped ones included)."""
    dropped: int = 0
    """Rows left out: no token carries loss within max_length."""

    def add(self, example: TokenizedExample) -> None:
        """Count one tokenized example."""
        self.rows += 1
        self.truncated += example.truncated
        if example.dropped:
            self.dropped += 1
            return
        self.trained += example.trained
        self.masked += example.masked

    @property
    def trained_share(self) -> float:
        """The part of the kept tokens that carries loss (0 when there are none)."""
        total = self.trained + self.masked
        return self.trained / total if total else 0.0

    def summary(self, max_length: int | None = None) -> str:
        """One line for the job's log: tokens trained, rows cut and dropped."""
        cut = f" at max length {max_length}" if max_length else ""
        return (
            f"{self.rows} rows: {self.trained:,} of {self.trained + self.masked:,} tokens"
            f" trained ({self.trained_share:.1%}); {self.truncated} rows cut{cut};"
            f" {self.dropped} rows dropped (no trained token left)"
        )


def supports_tools(tokenizer: Any) -> bool:
    """True when the tokenizer's chat template renders tool definitions or tool calls (its
    source uses `tools` or `tool_calls`)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = " ".join(str(t) for t in template.values())
    return bool(template) and _TOOLS_IN_TEMPLATE.search(str(template)) is not None


def tokenize_example(
    example: Example,
    tokenizer: Any,
    *,
    max_length: int | None = None,
    train_on_prompts: bool = False,
    strip: Sequence[str] = (),
    source: str = "",
) -> TokenizedExample:
    """The example's token ids and labels (see the module docstring).

    `strip` lists literal special tokens removed from the text first (`special_tokens`).
    `max_length` keeps the first tokens of a longer example. `source` names the file in the
    DatasetError raised for a row that cannot be rendered or masked (`{source}: line N: ...`).
    """
    if strip:
        example = strip_special_tokens(example, strip)
    where = f"{source}: line {example.line}" if source else f"line {example.line}"
    if example.messages is None:
        text = example.text or ""
        eos = getattr(tokenizer, "eos_token", None)
        # As TRL does for text rows: the EOS appended, the tokenizer's own specials added.
        ids = list(tokenizer(text + eos if eos and not text.endswith(eos) else text)["input_ids"])
        return _cut(ids, list(ids), example.line, text, max_length)
    _check_tools(example, tokenizer, where)
    example = _object_arguments(example)
    tools = example.tools or None
    full = _render(tokenizer, example.messages, tools, where)
    if train_on_prompts:
        ids = list(tokenizer(full, add_special_tokens=False)["input_ids"])
        return _cut(ids, list(ids), example.line, full, max_length)
    if not getattr(tokenizer, "is_fast", False):
        raise DatasetError(
            "the model's tokenizer is not a fast tokenizer, which masking the prompts needs;"
            " train on prompts instead"
        )
    turns = _trained_turns(example)
    spans = _reply_spans(tokenizer, example.messages, tools, full, turns, where)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    return _cut(ids, _labels(ids, encoded["offset_mapping"], spans), example.line, full, max_length)


def _check_tools(example: Example, tokenizer: Any, where: str) -> None:
    calls = any(m.get("tool_calls") for m in example.messages or ())
    if not (example.tools or calls) or supports_tools(tokenizer):
        return
    what = " and ".join(
        name for name, held in (("tool definitions", example.tools), ("tool calls", calls)) if held
    )
    raise DatasetError(
        f"{where}: the row has {what}, but the model's chat template does not render tools;"
        " remove such rows or choose a base model whose chat template supports tools"
    )


def _object_arguments(example: Example) -> Example:
    """`example` with tool-call arguments held as JSON text (as OpenAI exports them) parsed
    into objects: chat templates write `arguments | tojson`, which would quote text twice."""
    if not any(m.get("tool_calls") for m in example.messages or ()):
        return example
    messages = []
    for message in example.messages or ():
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_parsed_call(call) for call in calls]}
        messages.append(message)
    return replace(example, messages=messages)


def _parsed_call(call: Any) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if not isinstance(arguments, str):
        return call
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return call
    if not isinstance(parsed, dict):
        return call
    return {**call, "function": {**function, "arguments": parsed}}


def _render(
    tokenizer: Any, messages: list[Message], tools: list[dict[str, Any]] | None, where: str
) -> str:
    """The whole conversation through the chat template; DatasetError naming the line when
    the template refuses it."""
    if not getattr(tokenizer, "chat_template", None):
        raise DatasetError(
            "the model's tokenizer has no chat template; chat datasets need an instruct model"
        )
    try:
        return _rendered(tokenizer, messages, tools)
    except Exception as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DatasetError(
            f"{where}: the model's chat template refuses this conversation ({reason})"
        ) from None


def _rendered(
    tokenizer: Any,
    messages: list[Message],
    tools: list[dict[str, Any]] | None,
    *,
    generation: bool = False,
) -> str:
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation}
    if tools is not None:
        kwargs["tools"] = tools
    return tokenizer.apply_chat_template(messages, **kwargs)


def _trained_turns(example: Example) -> list[int]:
    weights = example.weights
    return [
        i
        for i, message in enumerate(example.messages or ())
        if message.get("role") == "assistant"
        and (weights is None or i >= len(weights) or weights[i] != 0)
    ]


def _reply_spans(
    tokenizer: Any,
    messages: list[Message],
    tools: list[dict[str, Any]] | None,
    full: str,
    turns: list[int],
    where: str,
) -> list[tuple[int, int]]:
    """The trained replies' character spans in `full`, in order: each from the renderings up
    to its turn where the template is prefix-stable there, else found by its content."""
    trained = set(turns)
    end_tokens: list[str] | None = None
    spans: list[tuple[int, int]] = []
    cursor = 0  # the messages before it are behind us: a reply is looked for after them
    for i, message in enumerate(messages):
        content = message.get("content")
        content = content.strip() if isinstance(content, str) else ""
        if i not in trained:
            at = full.find(content, cursor) if content else -1
            if at >= 0:
                cursor = at + len(content)
            continue
        span = _rendered_span(tokenizer, messages, tools, full, i)
        if span is None:
            if end_tokens is None:
                end_tokens = _end_tokens(tokenizer)
            span = _found_span(content, full, cursor, end_tokens)
        if span is None:
            number = sum(1 for m in messages[: i + 1] if m.get("role") == "assistant")
            raise DatasetError(
                f"{where}: assistant reply {number} is not found in the conversation as the"
                " model's chat template renders it, so its prompt cannot be masked; train on"
                " prompts to train on every token"
            )
        if span[1] > span[0]:
            spans.append(span)
        cursor = max(cursor, span[1])
    return spans


def _rendered_span(
    tokenizer: Any,
    messages: list[Message],
    tools: list[dict[str, Any]] | None,
    full: str,
    i: int,
) -> tuple[int, int] | None:
    """Turn `i`'s reply as the characters between the conversation rendered up to it with
    the generation prompt and rendered with it, when both begin `full`; else None."""
    try:
        prompt = _rendered(tokenizer, messages[:i], tools, generation=True)
        last = i == len(messages) - 1
        through = full if last else _rendered(tokenizer, messages[: i + 1], tools)
    except Exception:  # a template may refuse a partial conversation
        return None
    if not (through.startswith(prompt) and full.startswith(through)):
        return None
    # The end-of-turn token the template writes is the reply's; the whitespace after it not.
    return len(prompt), len(prompt) + len(through[len(prompt) :].rstrip())


def _end_tokens(tokenizer: Any) -> list[str]:
    """Special tokens a reply may end on, the EOS first."""
    eos = getattr(tokenizer, "eos_token", None)
    specials = list(getattr(tokenizer, "all_special_tokens", None) or [])
    ordered = [eos, *sorted(specials, key=len, reverse=True)] if eos else specials
    return [t for t in dict.fromkeys(ordered) if isinstance(t, str) and t]


def _found_span(
    content: str, full: str, cursor: int, end_tokens: list[str]
) -> tuple[int, int] | None:
    """The first place from `cursor` where `content` stands in `full`, with the special token
    that directly follows it; None when it is not there."""
    at = full.find(content, cursor) if content else -1
    if at < 0:
        return None
    end = at + len(content)
    return at, end + next((len(t) for t in end_tokens if full.startswith(t, end)), 0)


def _labels(
    ids: list[int], offsets: Sequence[Sequence[int]], spans: list[tuple[int, int]]
) -> list[int]:
    """Each token's id where its characters overlap a span (spans in order), else IGNORED."""
    labels = []
    k = 0
    for token, (start, end) in zip(ids, offsets, strict=True):
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        # A token with no characters (end == start) counts where it stands.
        inside = k < len(spans) and spans[k][0] < max(end, start + 1)
        labels.append(token if inside else IGNORED)
    return labels


def _cut(
    ids: list[int], labels: list[int], line: int, text: str, max_length: int | None
) -> TokenizedExample:
    length = len(ids)
    trained_in_full = sum(1 for label in labels if label != IGNORED)
    truncated = max_length is not None and length > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
    trained = sum(1 for label in labels if label != IGNORED)
    return TokenizedExample(
        input_ids=ids,
        labels=labels,
        line=line,
        text=text,
        length=length,
        truncated=truncated,
        trained=trained,
        masked=len(ids) - trained,
        trained_in_full=trained_in_full,
    )
