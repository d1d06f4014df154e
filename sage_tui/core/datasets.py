"""Fine-tuning datasets in the formats people bring, turned into chat examples.

A dataset file is JSON lines (`.jsonl`), a JSON array (`.json`, or an object holding one list
such as `{"data": [...]}`) or CSV with a header row (`.csv`). Its rows are in one of five
formats, detected from their keys or named by the user:

- `messages`: `{"messages": [{"role": ..., "content": ...}, ...]}` (OpenAI / TRL style)
- `sharegpt`: `{"conversations": [{"from": ..., "value": ...}, ...]}`, optional `system`
- `alpaca`: `instruction`, optional `input`, `output`, optional `system` and `history`
- `prompt_completion`: `prompt`, `completion`
- `text`: `{"text": ...}`, plain text for continued pre-training

Every row is validated and converted to an `Example` (chat messages, or text). A bad row is
reported with its line and the reason; by default any bad row refuses the file, so nobody trains
on half a dataset without noticing. `split` and `write_jsonl` save train/eval files;
`dataset_preview` renders examples through the model's chat template and measures them.

Nothing heavy is imported here: the tokenizer is handed in by the caller.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from sage_tui.errors import SageError


class DatasetError(SageError):
    """A dataset file that cannot be used as it is; the message names the file and line."""


class InvalidRow(DatasetError):
    """One row that cannot be converted; the message is the reason, without file or line."""


class Format(str, Enum):
    """The row formats understood; the value is the name users type (`--format alpaca`)."""

    MESSAGES = "messages"
    SHAREGPT = "sharegpt"
    ALPACA = "alpaca"
    PROMPT_COMPLETION = "prompt_completion"
    TEXT = "text"

    def __str__(self) -> str:
        return self.value


FORMATS: tuple[str, ...] = tuple(f.value for f in Format)
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".jsonl", ".json", ".csv")
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
_DETECT_ROWS = 20

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

# CSV cells are strings; these columns hold lists, written as JSON inside the cell.
_JSON_COLUMNS = ("messages", "conversations", "history")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SHOWN_PROBLEMS = 5

Message = dict[str, str]


@dataclass(frozen=True)
class Example:
    """One training example: chat `messages`, or plain `text` for continued pre-training."""

    messages: list[Message] | None = None
    text: str | None = None
    line: int = 0  # where the row starts in its file (1-based; 0 when not from a file)

    @property
    def is_text(self) -> bool:
        """True for a plain-text example."""
        return self.messages is None

    def record(self) -> dict[str, Any]:
        """The JSON object written for this example: `{"messages": [...]}` or `{"text": ...}`."""
        if self.messages is None:
            return {"text": self.text}
        return {"messages": [dict(m) for m in self.messages]}


@dataclass(frozen=True)
class RowProblem:
    """Why one row was refused."""

    line: int  # 1-based line where the row starts
    row_index: int  # 0-based position among the file's rows
    message: str
    in_array: bool = False  # rows of a JSON array are also shown by number

    def __str__(self) -> str:
        where = f"line {self.line}"
        if self.in_array:
            where += f" (row {self.row_index + 1})"
        return f"{where}: {self.message}"


@dataclass
class LoadedDataset:
    """A dataset file read, validated and converted."""

    path: Path
    format: Format
    examples: list[Example]
    problems: list[RowProblem] = field(default_factory=list)
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        """Rows in the file, kept and skipped."""
        return len(self.examples) + self.skipped

    @property
    def is_text(self) -> bool:
        """True when the examples are plain text (continued pre-training)."""
        return self.format is Format.TEXT

    def fill_placeholders(self, values: Mapping[str, str]) -> LoadedDataset:
        """A copy with `{{name}}` placeholders filled from `values`, warnings recomputed."""
        examples = fill_placeholders(self.examples, values)
        kept = [w for w in self.warnings if _PLACEHOLDER_WARNING_MARK not in w]
        warning = _placeholder_warning(str(self.path), examples)
        return replace(self, examples=examples, warnings=kept + ([warning] if warning else []))


@dataclass(frozen=True)
class _Row:
    line: int
    index: int
    value: Any
    error: str | None = None  # set when the row could not even be parsed


# ---------------------------------------------------------------------------------------------
# Reading files


def _fail(source: str, what: str) -> DatasetError:
    return DatasetError(f"{source}: {what}")


def _decode(source: str, data: bytes) -> str:
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        byte = data[err.start]
        raise _fail(
            source,
            f"line {line} is not valid UTF-8 (byte 0x{byte:02x} at column {column});"
            " save the file as UTF-8",
        ) from None


def _read_jsonl(text: str) -> list[_Row]:
    rows: list[_Row] = []
    # Not splitlines(): JSON strings may hold a raw U+2028, which splitlines() breaks on.
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as err:
            offset = len(raw) - len(raw.lstrip())
            reason = f"not valid JSON: {err.msg} (column {err.colno + offset})"
            rows.append(_Row(number, len(rows), None, reason))
            continue
        rows.append(_Row(number, len(rows), value))
    return rows


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _array_starts(text: str, pos: int) -> list[int]:
    """Offsets where the elements of the (valid) JSON array at `pos` start."""
    starts: list[int] = []
    pos = _skip(text, pos + 1)
    if text[pos] == "]":
        return starts
    while True:
        starts.append(pos)
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] != ",":
            return starts
        pos = _skip(text, pos + 1)


def _member_start(text: str, key: str) -> int:
    """Offset of the value of `key` in the (valid) top-level JSON object; the last one wins."""
    found = -1
    pos = _skip(text, _skip(text, 0) + 1)
    while text[pos] != "}":
        name, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, _skip(text, pos) + 1)  # past the colon
        if name == key:
            found = pos
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return found


def _lines_of(text: str, offsets: list[int]) -> list[int]:
    # Offsets ascend, so counting newlines between neighbours is linear in the file size.
    lines: list[int] = []
    line, previous = 1, 0
    for offset in offsets:
        line += text.count("\n", previous, offset)
        lines.append(line)
        previous = offset
    return lines


def _votes(row: Mapping[str, Any]) -> Format | None:
    for fmt, keys in _MARKERS.items():
        if any(key in row for key in keys):
            return fmt
    return None


def _read_json(source: str, text: str) -> tuple[list[_Row], bool]:
    """Rows of a .json file, and whether they came from an array (rather than JSON lines)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and text.lstrip().startswith("{"):
            # JSON lines saved as .json: common enough to just read them.
            return _read_jsonl(text), False
        raise _fail(
            source, f"not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None
    if isinstance(document, dict) and _votes(document) is not None:
        # One example saved on its own (its `messages` list is not a list of rows).
        return [_Row(_lines_of(text, [_skip(text, 0)])[0], 0, document)], True
    if isinstance(document, list):
        items, start = document, _skip(text, 0)
    elif isinstance(document, dict):
        lists = [key for key, value in document.items() if isinstance(value, list)]
        if len(lists) != 1:
            raise _fail(
                source,
                "expected a JSON array of rows or an object with one list field such as"
                f' {{"data": [...]}} (list fields found: {", ".join(lists) or "none"})',
            )
        items, start = document[lists[0]], _member_start(text, lists[0])
    else:
        raise _fail(source, f"expected a JSON array of rows, got {_kind(document)}")
    lines = _lines_of(text, _array_starts(text, start))
    return [
        _Row(line, i, value) for i, (line, value) in enumerate(zip(lines, items, strict=True))
    ], True


def _read_csv(source: str, text: str) -> list[_Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[_Row] = []
    try:
        for record in reader:
            value: dict[str, Any] = {}
            newlines = 0
            for key, cell in record.items():
                if key is None or cell is None:  # extra cells / short rows
                    continue
                newlines += cell.count("\n")
                if key in _JSON_COLUMNS and cell.lstrip().startswith("["):
                    # Left a string when broken: validation then says "must be a list".
                    with contextlib.suppress(json.JSONDecodeError):
                        cell = json.loads(cell)
                value[key] = cell
            # line_num is where the record ends; quoted cells may span lines.
            rows.append(_Row(reader.line_num - newlines, len(rows), value))
    except csv.Error as err:
        raise _fail(source, f"line {reader.line_num}: not valid CSV ({err})") from None
    return rows


def _read_rows(path: Path, source: str) -> tuple[list[_Row], bool]:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        shown = f"'{path.suffix}'" if path.suffix else "no extension"
        raise _fail(
            source,
            f"unsupported file type {shown} (supported: {', '.join(SUPPORTED_EXTENSIONS)})",
        )
    if not path.exists():
        raise DatasetError(f"{source} does not exist")
    if path.is_dir():
        raise DatasetError(f"{source} is a folder, not a dataset file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read {source}: {err.strerror or err}") from None
    text = _decode(source, data)
    if suffix == ".jsonl":
        return _read_jsonl(text), False
    if suffix == ".json":
        return _read_json(source, text)
    return _read_csv(source, text), False


# ---------------------------------------------------------------------------------------------
# Formats


def _kind(value: object) -> str:
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
    objects = [row for row in rows if isinstance(row, dict)][:_DETECT_ROWS]
    votes = Counter(_votes(row) for row in objects)
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
        raise InvalidRow(f"'{key}' must be a string, got {_kind(value)}")
    if required and not value.strip():
        raise InvalidRow(f"empty '{key}'")
    return value


def _turns(row: Mapping[str, Any], key: str, roles: Mapping[str, str], noun: str) -> list[Message]:
    if key not in row or row[key] is None:
        raise InvalidRow(f"missing '{key}'")
    turns = row[key]
    if not isinstance(turns, list):
        raise InvalidRow(f"'{key}' must be a list, got {_kind(turns)}")
    if not turns:
        raise InvalidRow(f"'{key}' is empty")
    # Both spellings are accepted in both formats: datasets mix them more than they admit.
    speaker, body = ("from", "value") if key == "conversations" else ("role", "content")
    messages: list[Message] = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise InvalidRow(f"{noun} {number} must be an object, got {_kind(turn)}")
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
                f"{noun} {number}: '{text_key}' must be a string, got {_kind(content)}"
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
            f"'history' must be a list of [question, answer] pairs, got {_kind(history)}"
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
        raise InvalidRow(f"expected a JSON object, got {_kind(row)}")
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


# ---------------------------------------------------------------------------------------------
# Placeholders


_PLACEHOLDER_WARNING_MARK = "unfilled placeholders"


def _strings(example: Example) -> Iterable[str]:
    if example.messages is None:
        yield example.text or ""
    else:
        for message in example.messages:
            yield message["content"]


def find_placeholders(examples: Iterable[Example]) -> dict[str, int]:
    """Unfilled `{{name}}` placeholders: each name with the number of examples holding it."""
    counts: Counter[str] = Counter()
    for example in examples:
        names = {name for text in _strings(example) for name in _PLACEHOLDER.findall(text)}
        counts.update(names)
    return dict(sorted(counts.items()))


def _placeholder_warning(source: str, examples: Sequence[Example]) -> str | None:
    found = find_placeholders(examples)
    if not found:
        return None
    rows = sum(1 for e in examples if any(_PLACEHOLDER.search(text) for text in _strings(e)))
    names = ", ".join("{{" + name + "}}" for name in found)
    return (
        f"{source}: {rows} of {len(examples)} rows hold {_PLACEHOLDER_WARNING_MARK} {names};"
        " fill them in before training"
    )


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
            value, messages=_fill(value.messages, values), text=_fill(value.text, values)
        )
    return value


def fill_placeholders(rows: Sequence[Any], values: Mapping[str, str]) -> list[Any]:
    """Copies of `rows` (Examples or raw rows) with `{{name}}` replaced from `values`.

    Placeholders without a value are left as they are, so the warning about them stays.
    """
    return [_fill(row, values) for row in rows]


# ---------------------------------------------------------------------------------------------
# Loading


def _problem_list(problems: Sequence[RowProblem]) -> str:
    shown = "; ".join(str(p) for p in problems[:_SHOWN_PROBLEMS])
    if len(problems) > _SHOWN_PROBLEMS:
        shown += f"; and {len(problems) - _SHOWN_PROBLEMS} more"
    return shown


def load_dataset_file(
    path: str | os.PathLike[str], *, fmt: str | Format | None = None, skip_invalid: bool = False
) -> LoadedDataset:
    """Read, validate and convert a dataset file.

    `fmt` names the format (detected from the rows when None). Any invalid row raises
    DatasetError listing the first few as `line N: reason`, unless `skip_invalid`, which keeps
    the valid rows and records the rest in `problems`. No valid row at all always raises.
    """
    path = Path(path)
    source = str(path)
    rows, in_array = _read_rows(path, source)
    if not rows:
        raise DatasetError(f"{source} has no rows")
    if fmt is None:
        chosen = detect_format([r.value for r in rows if r.error is None], source=source)
    else:
        chosen = parse_format(fmt)
    examples: list[Example] = []
    problems: list[RowProblem] = []
    for row in rows:
        reason = row.error
        if reason is None:
            try:
                examples.append(to_example(row.value, chosen, line=row.line))
                continue
            except InvalidRow as err:
                reason = str(err)
        problems.append(RowProblem(row.line, row.index, reason, in_array))
    if not examples:
        raise DatasetError(
            f"{source}: all {len(rows)} rows are invalid as {chosen.value}"
            f" ({_problem_list(problems)})"
        )
    if problems and not skip_invalid:
        raise DatasetError(
            f"{source}: {len(problems)} of {len(rows)} rows are invalid"
            f" ({_problem_list(problems)}); fix them or pass --skip-invalid"
        )
    warning = _placeholder_warning(source, examples)
    return LoadedDataset(
        path=path,
        format=chosen,
        examples=examples,
        problems=problems,
        skipped=len(problems),
        warnings=[warning] if warning else [],
    )


# ---------------------------------------------------------------------------------------------
# Splitting and saving


def split(
    examples: Sequence[Example], eval_fraction: float, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, eval): a deterministic random `eval_fraction` of the examples held out.

    Both parts keep the original order. A fraction above 0 holds out at least one example when
    there are two or more; the fraction must lie in [0, 0.5].
    """
    if not 0 <= eval_fraction <= 0.5:
        raise DatasetError(f"eval fraction must be between 0 and 0.5, got {eval_fraction}")
    total = len(examples)
    wanted = round(total * eval_fraction)
    if eval_fraction > 0 and total >= 2:
        wanted = max(1, wanted)
    wanted = min(wanted, max(total - 1, 0))
    if wanted == 0:
        return list(examples), []
    order = list(range(total))
    random.Random(seed).shuffle(order)
    held = set(order[:wanted])
    train = [e for i, e in enumerate(examples) if i not in held]
    evaluation = [e for i, e in enumerate(examples) if i in held]
    return train, evaluation


def write_jsonl(examples: Iterable[Example], path: str | os.PathLike[str]) -> int:
    """Write examples as JSON lines (`messages` or `text` records), atomically; returns the count.

    The file appears complete or not at all: it is written next to `path` and renamed over it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
    )
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as handle:
            for example in examples:
                handle.write(json.dumps(example.record(), ensure_ascii=False) + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count
