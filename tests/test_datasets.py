"""Dataset files in every supported format: detection, conversion, the real shared files,
split, write and preview."""

from __future__ import annotations

import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from sage_tui.core.data import (
    DatasetError,
    Example,
    Format,
    InvalidRow,
    detect_format,
    load_dataset_file,
    split,
    to_messages,
    write_jsonl,
)
from sage_tui.core.data.preview import Preview, preview, render_histogram
from sage_tui.errors import SageError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
]

# (format, row, expected messages or text)
FORMAT_CASES: list[tuple[str, dict[str, Any], Any]] = [
    ("messages", {"messages": CHAT}, CHAT),
    (
        "messages",
        {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "tool", "content": '{"temp": 20}'},
                {"role": "assistant", "content": "20 degrees."},
            ]
        },
        [
            {"role": "user", "content": "Weather?"},
            {"role": "tool", "content": '{"temp": 20}'},
            {"role": "assistant", "content": "20 degrees."},
        ],
    ),
    (
        "sharegpt",
        {
            "system": "Be brief.",
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello!"},
            ],
        },
        CHAT,
    ),
    (
        "sharegpt",
        {
            "conversations": [
                {"from": "user", "value": "Find a recipe"},
                {"from": "function_call", "value": '{"name": "search"}'},
                {"from": "observation", "value": '{"recipes": []}'},
                {"from": "model", "value": "None found."},
            ]
        },
        [
            {"role": "user", "content": "Find a recipe"},
            {"role": "assistant", "content": '{"name": "search"}'},
            {"role": "tool", "content": '{"recipes": []}'},
            {"role": "assistant", "content": "None found."},
        ],
    ),
    (
        "alpaca",
        {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be brief."},
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Translate\n\nbonjour"},
            {"role": "assistant", "content": "hello"},
        ],
    ),
    (
        "alpaca",
        {"instruction": "And 3+3?", "input": "", "output": "6", "history": [["2+2?", "4"]]},
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6"},
        ],
    ),
    (
        "prompt_completion",
        {"prompt": "The sky is", "completion": " blue."},
        [{"role": "user", "content": "The sky is"}, {"role": "assistant", "content": " blue."}],
    ),
    ("text", {"text": "Plain text for pre-training."}, "Plain text for pre-training."),
]


def write_rows(path: Path, rows: list[Any]) -> Path:
    """Rows in the file type `path`'s extension names (lists become JSON cells in CSV)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    else:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
                )
    return path


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return path


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
@pytest.mark.parametrize(("fmt", "row", "expected"), FORMAT_CASES)
def test_each_format_is_detected_and_converted(
    tmp_path: Path, suffix: str, fmt: str, row: dict[str, Any], expected: Any
) -> None:
    path = write_rows(tmp_path / f"data{suffix}", [row, row])
    loaded = load_dataset_file(path)
    assert loaded.format == fmt
    assert loaded.skipped == 0 and loaded.problems == []
    # The row is written twice, so the second is an exact duplicate of the first.
    assert loaded.duplicates == 1 and len(loaded.warnings) == 1
    assert "1 row is an exact duplicate of earlier ones (first: line" in loaded.warnings[0]
    assert len(loaded.examples) == 2
    example = loaded.examples[0]
    if fmt == "text":
        assert example.is_text and example.text == expected and example.messages is None
    else:
        assert example.messages == expected and example.text is None


def test_first_rows_decide_by_majority() -> None:
    rows = [{"instruction": "q", "output": "a"}] * 3 + [{"text": "t"}]
    assert detect_format(rows) is Format.ALPACA
    assert detect_format([{"weird": 1}, {"text": "x"}, {"text": "y"}]) is Format.TEXT


def test_named_format_overrides_detection(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.jsonl", [{"text": "x", "prompt": "p", "completion": "c"}])
    assert load_dataset_file(path).format is Format.PROMPT_COMPLETION
    assert load_dataset_file(path, fmt="text").examples[0].text == "x"
    with pytest.raises(DatasetError, match=r"unknown dataset format \"chatml\" \(expected one"):
        load_dataset_file(path, fmt="chatml")


def test_to_messages_on_single_rows() -> None:
    assert to_messages({"text": "x"}, "text") is None
    with pytest.raises(InvalidRow, match=r"^missing 'output'$"):
        to_messages({"instruction": "q"}, Format.ALPACA)
    assert issubclass(DatasetError, SageError)


# --- the real shared files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "rows"),
    [
        ("alpaca_en_demo.json", Format.ALPACA, 999),
        ("alpaca_zh_demo.json", Format.ALPACA, 1000),
        ("glaive_toolcall_en_demo.json", Format.SHAREGPT, 300),
        ("c4_demo.jsonl", Format.TEXT, 300),
        ("identity.json", Format.ALPACA, 91),
    ],
)
def test_real_public_files_load_whole(name: str, fmt: Format, rows: int) -> None:
    loaded = load_dataset_file(shared(name))
    assert loaded.format is fmt
    assert len(loaded.examples) == rows and loaded.skipped == 0
    assert all(e.is_text == (fmt is Format.TEXT) for e in loaded.examples)
    if fmt is Format.ALPACA:
        assert loaded.examples[1].line == 7  # each row's own opening line


def test_glaive_tool_turns_map_to_assistant_and_tool() -> None:
    loaded = load_dataset_file(shared("glaive_toolcall_en_demo.json"))
    first = loaded.examples[0].messages
    assert first is not None
    assert [m["role"] for m in first[:6]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    # The call is kept as the assistant's tool call, its arguments as the row holds them.
    assert first[3]["content"] == ""
    assert first[3]["tool_calls"] == [
        {
            "type": "function",
            "function": {
                "name": "search_recipes",
                "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]},
            },
        }
    ]
    assert first[4]["content"].startswith('{"recipes"')
    tools = loaded.examples[0].tools
    assert tools is not None and tools[0]["name"] == "search_recipes"


# --- split and write ----------------------------------------------------------------------------


def examples(n: int) -> list[Example]:
    return [Example(text=f"row {i}") for i in range(n)]


def test_split_is_deterministic_and_bounded() -> None:
    rows = examples(100)
    train, evaluation = split(rows, 0.1, seed=7)
    assert (train, evaluation) == split(rows, 0.1, seed=7)
    assert split(rows, 0.1, seed=8)[1] != evaluation
    assert len(evaluation) == 10 and len(train) == 90
    assert sorted(train + evaluation, key=lambda e: int(e.text.split()[1])) == rows
    assert split(rows, 0, seed=1) == (rows, [])
    assert [len(part) for part in split(examples(2), 0.01, seed=1)] == [1, 1]
    assert [len(part) for part in split(examples(3), 0.5, seed=1)] == [1, 2]
    assert split(examples(1), 0.5, seed=1) == (examples(1), [])
    for fraction in (-0.1, 0.6):
        with pytest.raises(DatasetError, match=r"between 0 and 0\.5"):
            split(rows, fraction, seed=1)


def test_write_jsonl_round_trips_atomically(tmp_path: Path) -> None:
    rows = [Example(messages=CHAT), Example(text="plain")]
    target = tmp_path / "out" / "train.jsonl"
    assert write_jsonl(rows, target) == 2
    assert [json.loads(line) for line in target.read_text().splitlines()] == [
        {"messages": CHAT},
        {"text": "plain"},
    ]
    assert list(target.parent.iterdir()) == [target]

    def exploding() -> Any:
        yield Example(text="half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_jsonl(exploding(), target)
    assert target.read_text().count("\n") == 2  # the old file is untouched
    assert list(target.parent.iterdir()) == [target]


# --- preview ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(builtin_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(builtin_model_dir)


def test_preview_on_alpaca_with_the_real_tokenizer(tokenizer: Any) -> None:
    loaded = load_dataset_file(shared("alpaca_en_demo.json"))
    started = time.perf_counter()
    shown = preview(loaded, tokenizer, max_length=256, rows=3)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"preview of 999 rows took {elapsed:.2f} s"

    assert len(shown.samples) == 3
    assert "<|im_start|>user\nDescribe a process of making crepes." in shown.samples[0]
    assert shown.count == 999
    assert shown.min_tokens <= shown.median_tokens <= shown.max_tokens
    assert shown.min_tokens <= shown.mean_tokens <= shown.max_tokens
    assert shown.median_tokens == statistics.median(shown.lengths)

    rendered = tokenizer.apply_chat_template([e.messages for e in loaded.examples], tokenize=False)
    direct = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in rendered[:50]]
    assert shown.lengths[:50] == direct
    assert shown.truncated == sum(1 for n in shown.lengths if n > 256) > 0

    buckets = shown.histogram(bins=10)
    assert len(buckets) <= 10 and sum(count for _, _, count in buckets) == 999
    assert buckets[0][0] == shown.min_tokens and buckets[-1][1] == shown.max_tokens
    assert all(low <= high for low, high, _ in buckets)
    bars = shown.histogram_text(bins=10, width=20)
    assert len(bars.splitlines()) == len(buckets) and "█" * 20 in bars


def test_preview_of_text_rows(tokenizer: Any) -> None:
    shown = preview([Example(text="hello world"), Example(text="a b c d e f")], tokenizer, 4)
    assert shown.samples == ["hello world", "a b c d e f"]
    assert shown.truncated == 1 and shown.count == 2


def test_histogram_buckets_and_bars() -> None:

    shown = Preview(samples=[], lengths=[10, 10, 11, 30], max_length=20)
    assert shown.histogram(bins=3) == [(10, 16, 3), (17, 23, 0), (24, 30, 1)]
    assert Preview(samples=[], lengths=[5, 5], max_length=8).histogram() == [(5, 5, 2)]
    assert render_histogram([(1, 2, 4), (3, 4, 0), (5, 6, 1)], width=4, bar="#") == (
        "1-2 #### 4\n3-4 0\n5-6 # 1"
    )
