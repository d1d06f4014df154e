"""Literal special tokens in a dataset's text: found, counted and, when asked, removed.

A row whose text holds `<|im_end|>` or `</s>` as plain characters is tokenized into the real
control token, so the model learns to end a turn (or a document) in the middle of one. The
tokens looked for are the usual ones of the common chat formats plus the tokenizer's own
special tokens; `SpecialTokenTally` counts the rows holding each (for a warning) and
`strip_special_tokens` removes them from the contents and the text before rendering.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from sage_tui.core.data.formats import Example

COMMON_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<bos>",
    "<eos>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
)
"""Control tokens of the common chat formats (ChatML, Llama 3, Phi, Gemma, Mistral)."""


def special_tokens_of(tokenizer: Any | None) -> tuple[str, ...]:
    """The literal tokens to look for: the common ones and the tokenizer's own special tokens
    (its EOS included), longest first so that one never hides a longer one."""
    found = list(COMMON_SPECIAL_TOKENS)
    if tokenizer is not None:
        found += list(getattr(tokenizer, "all_special_tokens", None) or [])
        eos = getattr(tokenizer, "eos_token", None)
        if eos:
            found.append(eos)
    unique = {token for token in found if isinstance(token, str) and token.strip()}
    return tuple(sorted(unique, key=lambda token: (-len(token), token)))


def _pattern(tokens: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def _texts(example: Example) -> Iterable[str]:
    if example.messages is None:
        yield example.text or ""
        return
    for message in example.messages:
        content = message.get("content")
        if isinstance(content, str):
            yield content


def find_special_tokens(example: Example, tokens: Sequence[str]) -> set[str]:
    """The tokens among `tokens` that the example's text or message contents hold."""
    if not tokens:
        return set()
    pattern = _pattern(tokens)
    return {match for text in _texts(example) for match in pattern.findall(text)}


def strip_special_tokens(example: Example, tokens: Sequence[str]) -> Example:
    """The example with every literal token of `tokens` removed from its text or contents
    (other message fields, tool calls included, are kept as they are)."""
    if not tokens:
        return example
    pattern = _pattern(tokens)
    if example.messages is None:
        return replace(example, text=pattern.sub("", example.text or ""))
    messages = []
    for message in example.messages:
        content = message.get("content")
        if isinstance(content, str) and pattern.search(content):
            message = {**message, "content": pattern.sub("", content)}
        messages.append(message)
    return replace(example, messages=messages)


class SpecialTokenTally:
    """Counts the rows holding each literal special token, row by row (for streaming)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = tuple(tokens)
        self._pattern = _pattern(self.tokens) if self.tokens else None
        self._rows: Counter[str] = Counter()

    def add(self, example: Example) -> set[str]:
        """Count one example; returns the tokens it holds."""
        if self._pattern is None:
            return set()
        held = {match for text in _texts(example) for match in self._pattern.findall(text)}
        self._rows.update(held)
        return held

    def found(self) -> dict[str, int]:
        """Each token found, with the number of rows holding it, most rows first."""
        return dict(sorted(self._rows.items(), key=lambda item: (-item[1], item[0])))

    def warning(self, source: str, *, stripped: bool = False) -> str | None:
        """One line about the tokens found, or None when no row holds any."""
        found = self.found()
        if not found:
            return None
        listed = ", ".join(f"{token} ({rows} rows)" for token, rows in found.items())
        if stripped:
            return f"{source}: literal special tokens removed from the rows' text: {listed}"
        return (
            f"{source}: rows hold literal special tokens of chat formats in their text (a"
            f" tokenizer that knows one reads it as a control token): {listed}; strip special"
            " tokens to remove them"
        )
