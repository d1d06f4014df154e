"""`{{name}}` placeholders in datasets (LLaMA-Factory's identity set has `{{name}}` and
`{{author}}`): finding the ones left unfilled, and filling them from values.

Placeholders are looked for, and filled, in every string the model sees: plain text, message
contents, names, tool calls and the tool definitions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sage_tui.core.data.formats import Example

PLACEHOLDER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""What a placeholder's name may be (match it whole)."""
_PLACEHOLDER = re.compile(r"\{\{\s*(" + PLACEHOLDER_NAME.pattern + r")\s*\}\}")
_WARNING_MARK = "unfilled placeholders"


def _all_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _all_strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _all_strings(item)


def _strings(example: Example) -> Iterable[str]:
    """Every string of the example the model sees: the text, each message's content, name
    and tool calls (their arguments, as a string or inside an object), and the tools."""
    if example.messages is None:
        yield example.text or ""
        return
    for message in example.messages:
        content = message.get("content")
        if isinstance(content, str):
            yield content
        for key in ("name", "tool_calls"):
            if key in message:
                yield from _all_strings(message[key])
    if example.tools:
        yield from _all_strings(example.tools)


class PlaceholderTally:
    """Unfilled `{{name}}` placeholders counted over examples as they go by (one pass, no
    list kept): the rows holding each name, the rows holding any, and the rows seen."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.rows_holding = 0
        self.rows = 0

    def add(self, example: Example) -> None:
        """Count one example."""
        self.rows += 1
        names = {name for text in _strings(example) for name in _PLACEHOLDER.findall(text)}
        if names:
            self.rows_holding += 1
            self.counts.update(names)

    def found(self) -> dict[str, int]:
        """Each name with the number of examples holding it, sorted by name."""
        return dict(sorted(self.counts.items()))

    def warning(self, source: str) -> str | None:
        """The warning about the placeholders counted (in file `source`), or None."""
        if not self.counts:
            return None
        names = ", ".join("{{" + name + "}}" for name in self.found())
        return (
            f"{source}: {self.rows_holding} of {self.rows} rows hold {_WARNING_MARK} {names};"
            " fill them in before training"
        )


def _tally(examples: Iterable[Example]) -> PlaceholderTally:
    tally = PlaceholderTally()
    for example in examples:
        tally.add(example)
    return tally


def find_placeholders(examples: Iterable[Example]) -> dict[str, int]:
    """Unfilled `{{name}}` placeholders: each name with the number of examples holding it."""
    return _tally(examples).found()


def placeholder_warning(source: str, examples: Iterable[Example]) -> str | None:
    """The warning about unfilled placeholders in `examples` (of file `source`), or None."""
    return _tally(examples).warning(source)


def is_placeholder_warning(warning: str) -> bool:
    """True for a warning made by `placeholder_warning`."""
    return _WARNING_MARK in warning


def _fill(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if isinstance(value, tuple):
        return tuple(_fill(item, values) for item in value)
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    if isinstance(value, Example):
        return replace(
            value,
            messages=_fill(value.messages, values),
            text=_fill(value.text, values),
            tools=_fill(value.tools, values),
        )
    return value


def fill_example(example: Example, values: Mapping[str, str]) -> Example:
    """A copy of `example` with `{{name}}` replaced from `values` (see fill_placeholders)."""
    return _fill(example, values)


def fill_placeholders(rows: Sequence[Any], values: Mapping[str, str]) -> list[Any]:
    """Copies of `rows` (Examples or raw rows) with `{{name}}` replaced from `values`.

    Placeholders without a value are left as they are, so the warning about them stays.
    """
    return [_fill(row, values) for row in rows]
