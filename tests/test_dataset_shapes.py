"""Dataset rows in the shapes people bring: column mappings, and where a problem is shown."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from sage_tui.core.data import (
    DatasetError,
    Example,
    Format,
    InvalidRow,
    RowProblem,
    detect_format,
    find_placeholders,
    iter_examples,
    load_dataset_file,
    to_example,
)
from sage_tui.core.data.columns import STANDARD_COLUMNS, parse_columns
from sage_tui.core.data.duplicates import DuplicateCounter
from sage_tui.core.data.formats import marked_format
from sage_tui.core.data.placeholders import fill_example


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- column mappings ----------------------------------------------------------------------------


def test_parse_columns_reads_the_cli_form() -> None:
    assert parse_columns("instruction=question, output = answer") == {
        "instruction": "question",
        "output": "answer",
    }
    assert parse_columns("  ") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("instruction", r'"instruction" is not STANDARD=COLUMN \(for instance'),
        ("a=b=c", r'"a=b=c" is not STANDARD=COLUMN'),
        ("=answer", r'"=answer" has no standard name before'),
        ("output=", r'"output=" has no column name after'),
        ("output=a,,input=b", r"an entry is empty"),
        ("output=a,output=b", r'"output" is mapped twice \(to "a" and "b"\)'),
        ("question=instruction", r'"question" is not a standard column name \(known: messages,'),
        ("answer=output", r"the standard name comes first: output=answer"),
        ("instruction=q,input=q", r'column "q" is given two standard names'),
    ],
)
def test_parse_columns_refuses_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_columns(text)


def test_known_names_are_the_keys_the_formats_read() -> None:
    with pytest.raises(DatasetError) as caught:
        parse_columns("reply=answer")
    assert ", ".join(STANDARD_COLUMNS) in str(caught.value)


def test_a_mapped_file_loads_and_iterates_with_its_own_names(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}", "output": "not this"} for i in range(3)]
    path = jsonl(tmp_path / "qa.jsonl", rows)
    columns = {"instruction": "question", "output": "answer"}
    loaded = load_dataset_file(path, columns=columns)
    assert loaded.format is Format.ALPACA
    assert loaded.examples[1].messages == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
    ]
    again = list(iter_examples(path, loaded.format, columns=columns))
    assert [e.messages for e in again] == [e.messages for e in loaded.examples]


def test_a_mapping_that_finds_nothing_says_which(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DatasetError) as caught:
        load_dataset_file(path, columns={"instruction": "question", "output": "reply"})
    assert str(caught.value) == (
        f"{path}: the column mapping output=reply found nothing: no column of that name in"
        " the first 1 rows (columns found: answer, question)"
    )


def test_a_mapping_given_as_a_dict_is_checked(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DatasetError, match=r'"query" is not a standard column name'):
        load_dataset_file(path, columns={"query": "question"})


# --- where a problem is shown -------------------------------------------------------------------


def test_row_problems_name_their_unit() -> None:
    assert str(RowProblem(12, 11, "missing 'output'")) == "line 12: missing 'output'"
    assert str(RowProblem(3, 2, "bad", in_array=True)) == "line 3 (row 3): bad"
    assert str(RowProblem(12, 11, "bad", unit="row")) == "row 12: bad"
    assert str(RowProblem(12, 11, "bad", in_array=True, unit="row")) == "row 12: bad"


# --- supervised shapes accepted -----------------------------------------------------------------


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {"type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}


def one(row: dict[str, Any], fmt: str | None = None) -> Example:
    example = to_example(row, fmt or marked_format(row) or "messages", line=3)
    assert example.line == 3
    return example


def test_openai_chat_keeps_names_tool_calls_and_tools() -> None:
    row = {
        "messages": [
            {"role": "system", "content": "You check the weather."},
            {"role": "user", "content": "Paris?", "name": "ann"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", **CALL}]},
            {"role": "tool", "content": '{"temp": 20}', "tool_call_id": "c1", "name": "weather"},
            {"role": "assistant", "content": "20 degrees."},
        ],
        "tools": json.dumps([WEATHER_TOOL]),  # exports write the list as a JSON string
    }
    example = one(row)
    assert example.messages == [
        {"role": "system", "content": "You check the weather."},
        {"role": "user", "content": "Paris?", "name": "ann"},
        {"role": "assistant", "content": "", "tool_calls": [{**CALL, "id": "c1"}]},
        {"role": "tool", "content": '{"temp": 20}', "name": "weather", "tool_call_id": "c1"},
        {"role": "assistant", "content": "20 degrees."},
    ]
    assert example.tools == [WEATHER_TOOL] and example.weights is None
    # Arguments as an object stay an object; a tools list stays as given.
    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Rome"}}}
    row["messages"][2] = {"role": "assistant", "content": "", "tool_calls": [call]}
    row["tools"] = [WEATHER_TOOL]
    again = one(row)
    assert again.messages is not None and again.messages[2]["tool_calls"] == [call]
    assert again.tools == [WEATHER_TOOL]
    assert again.record()["tools"] == [WEATHER_TOOL]


def test_openai_weights_mark_turns_without_loss() -> None:
    row = {
        "messages": [
            {"role": "system", "content": "Be brief.", "weight": 0},  # ignored: never trained
            user("Hi"),
            {"role": "assistant", "content": "Hello!", "weight": 0},
            user("Bye"),
            {"role": "assistant", "content": "Bye!", "weight": 1},
            user("Again"),
            bot("Bye again!"),  # no weight: carries loss
        ]
    }
    assert one(row).weights == (0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0)
    assert one({"messages": [user("Hi"), bot("Hello!")]}).weights is None


@pytest.mark.parametrize(
    ("turn", "message"),
    [
        (
            {"role": "assistant", "content": "a", "weight": 0.5},
            r"message 2: 'weight' must be 0 or 1, got 0\.5$",
        ),
        (
            {"role": "assistant", "content": "a", "weight": True},
            r"'weight' must be 0 or 1, got true$",
        ),
        (
            {"role": "assistant", "content": "a", "weight": "1"},
            r"'weight' must be 0 or 1, got string$",
        ),
        ({"role": "assistant", "content": ""}, r"^message 2 has empty 'content'$"),
        (
            {"role": "assistant", "content": None, "tool_calls": []},
            r"'content' must be a string, got null",
        ),
        (
            {"role": "assistant", "content": [{"type": "input_audio", "input_audio": {}}]},
            r"^a multimodal row \(a content part of type 'input_audio'\), not supervised",
        ),
        (
            {"role": "assistant", "content": [{"text": "a"}]},
            r"^message 2: content part 1 has no 'type' \(text parts are",
        ),
        (
            {"role": "assistant", "content": "", "tool_calls": [{"type": "code"}]},
            r"tool call 1 is of type \"code\"; only function calls",
        ),
        (
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]},
            r"message 2: tool call 1 has no function 'name'",
        ),
        (
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": 3}}],
            },
            r"'arguments' must be a JSON string or an object, got number",
        ),
    ],
)
def test_bad_openai_turns_say_what_is_wrong(turn: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRow, match=message):
        to_example({"messages": [user("q"), turn]}, "messages")


def test_a_weight_of_one_on_a_user_turn_is_refused() -> None:
    turns = [{"role": "user", "content": "q", "weight": 1}, bot("a")]
    with pytest.raises(InvalidRow, match=r"^message 1: 'weight' 1 on a user turn; only assistant"):
        to_example({"messages": turns}, "messages")
    with pytest.raises(InvalidRow, match=r"^message 1: 'tool_calls' are only for assistant turns"):
        to_example({"messages": [{**user("q"), "tool_calls": [CALL]}, bot("a")]}, "messages")


def test_text_parts_are_joined_as_they_are() -> None:
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world.\n"}]
    example = one({"messages": [{"role": "user", "content": parts}, bot("Hi.")]})
    assert example.messages is not None and example.messages[0]["content"] == "Hello, world.\n"


def test_a_conversation_still_needs_a_user_turn_and_a_reply_last() -> None:
    with pytest.raises(InvalidRow, match=r"^no user turn$"):
        to_example({"messages": [{"role": "system", "content": "s"}, bot("a")]}, "messages")
    with pytest.raises(InvalidRow, match=r"^last turn is 'tool', expected 'assistant'$"):
        turns = [user("q"), {"role": "assistant", "content": "", "tool_calls": [CALL]}]
        to_example({"messages": [*turns, {"role": "tool", "content": "20"}]}, "messages")


def test_tools_that_are_not_a_list_of_definitions_are_refused() -> None:
    chat = [user("q"), bot("a")]
    with pytest.raises(InvalidRow, match=r"^'tools' is a string that is not valid JSON \("):
        to_example({"messages": chat, "tools": "[{"}, "messages")
    with pytest.raises(InvalidRow, match=r"^tool 1 must be an object, got string$"):
        to_example({"messages": chat, "tools": ["weather"]}, "messages")
    assert one({"messages": chat, "tools": "[]"}).tools is None


def test_sharegpt_function_calls_become_tool_calls() -> None:
    row = {
        "system": "You check the weather.",
        "tools": json.dumps([WEATHER_TOOL["function"]]),
        "conversations": [
            {"from": "human", "value": "Paris?"},
            {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "P"}}'},
            {"from": "observation", "value": '{"temp": 20}'},
            {"from": "function_call", "value": "not a call"},
            {"from": "gpt", "value": "20 degrees.", "weight": 0},
        ],
    }
    example = one(row)
    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "P"}}}
    assert example.messages == [
        {"role": "system", "content": "You check the weather."},
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": '{"temp": 20}'},
        {"role": "assistant", "content": "not a call"},  # no JSON call: a text turn
        {"role": "assistant", "content": "20 degrees."},
    ]
    assert example.tools == [WEATHER_TOOL["function"]]
    assert example.weights == (0.0, 0.0, 1.0, 0.0, 1.0, 0.0)  # the top-level system counted


def test_sharegpt_parallel_calls() -> None:
    calls = [{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{}"}]
    example = one(
        {
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "function_call", "value": json.dumps(calls)},
                {"from": "observation", "value": "[1, 2]"},
                {"from": "gpt", "value": "done"},
            ]
        }
    )
    assert example.messages is not None
    assert [c["function"]["name"] for c in example.messages[1]["tool_calls"]] == ["a", "b"]


@pytest.mark.parametrize(
    ("row", "user_text", "reply"),
    [
        (
            {"instruction": "Name a colour.", "response": "Blue.", "category": "open_qa"},
            "Name a colour.",
            "Blue.",
        ),
        (
            {
                "instruction": "Summarise.",
                "context": "A long text.",
                "response": "Short.",
                "category": "summarization",
            },
            "Summarise.\n\nA long text.",
            "Short.",
        ),
        (
            {"instruction": "Summarise.", "context": "", "response": "Nothing."},
            "Summarise.",
            "Nothing.",
        ),
    ],
)
def test_dolly_rows_are_alpaca(row: dict[str, Any], user_text: str, reply: str) -> None:
    assert detect_format([row]) is Format.ALPACA
    assert one(row).messages == [user(user_text), bot(reply)]


def test_prompt_and_response_read_as_prompt_completion() -> None:
    row = {"prompt": "The sky is", "response": " blue."}
    assert detect_format([row]) is Format.PROMPT_COMPLETION
    assert one(row).messages == [user("The sky is"), bot(" blue.")]


def test_trl_conversational_prompt_completion_trains_the_completion_only() -> None:
    row = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            user("2+2?"),
            bot("4"),
            user("3+3?"),
        ],
        "completion": [bot("6")],
    }
    assert detect_format([row]) is Format.PROMPT_COMPLETION
    example = one(row)
    assert example.messages == [*row["prompt"], bot("6")]
    assert example.weights == (0.0, 0.0, 0.0, 0.0, 1.0)
    with pytest.raises(InvalidRow, match=r"^'completion' must be a list of messages like the"):
        to_example({"prompt": [user("q")], "completion": "a"}, "prompt_completion")
    with pytest.raises(InvalidRow, match=r"^the completion holds no assistant turn$"):
        to_example({"prompt": [user("q")], "completion": [user("a")]}, "prompt_completion")


@pytest.mark.parametrize(
    "document",
    [
        {"messages": [user("Hi"), bot("Hello!")]},
        {"instruction": "Hi", "output": "Hello!"},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    ],
)
def test_a_json_file_holding_one_example(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    loaded = load_dataset_file(path)
    assert loaded.usable == 1 and loaded.examples[0].line == 1
    assert loaded.examples[0].messages == [user("Hi"), bot("Hello!")]


# --- duplicates ---------------------------------------------------------------------------------


def test_exact_duplicates_are_counted_with_the_first(tmp_path: Path) -> None:
    rows = [{"instruction": f"q{i % 3}", "output": "a"} for i in range(7)]
    rows.insert(1, {"instruction": "q0", "input": "", "output": "a"})  # the same once converted
    path = jsonl(tmp_path / "d.jsonl", rows)
    loaded = load_dataset_file(path)
    assert loaded.duplicates == 5
    assert loaded.warnings == [
        f"{path}: 5 rows are exact duplicates of earlier ones (first: line 2 repeats line 1)"
    ]
    assert load_dataset_file(jsonl(tmp_path / "u.jsonl", rows[2:5])).warnings == []


def test_the_duplicate_count_is_capped_and_says_so() -> None:
    counter = DuplicateCounter(limit=3)
    for line, record in enumerate(["a", "b", "c", "d", "a", "d", "e"], start=1):
        counter.add({"text": record}, line)
    assert counter.count == 1 and counter.full  # "d" was never remembered
    assert counter.warning("f.jsonl", unit="row") == (
        "f.jsonl: 1 row is an exact duplicate of earlier ones (first: row 5 repeats row 1)"
        " (only the first 3 distinct rows are remembered; later rows were compared with those)"
    )
    many = DuplicateCounter()
    for line in range(5000):
        many.add({"text": str(line % 2500)}, line + 1)
    assert many.count == 2500 and many.first == (2501, 1) and not many.full
    assert many.memory_bytes() <= 16 * 8192


# --- placeholders in the new shapes -------------------------------------------------------------


def test_placeholders_are_found_and_filled_in_every_string_the_model_sees() -> None:
    call = {"type": "function", "function": {"name": "greet", "arguments": '{"who": "{{name}}"}'}}
    example = one(
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Who are you?"}]},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": "ok", "name": "greet"},
                bot("I am {{ name }}, made by {{author}}."),
            ],
            "tools": [{"name": "greet", "description": "Greets as {{name}}"}],
        }
    )
    assert find_placeholders([example]) == {"author": 1, "name": 1}
    filled = fill_example(example, {"name": "Sage", "author": "Ann"})
    assert find_placeholders([filled]) == {}
    assert filled.messages is not None and filled.tools is not None
    assert filled.messages[3]["content"] == "I am Sage, made by Ann."
    assert filled.messages[1]["tool_calls"][0]["function"]["arguments"] == '{"who": "Sage"}'
    assert filled.tools[0]["description"] == "Greets as Sage"


def test_arguments_nested_past_reason_are_refused_not_crashed_on() -> None:
    deep: Any = "x"
    for _ in range(500):
        deep = {"a": deep}
    call = {"type": "function", "function": {"name": "f", "arguments": deep}}
    turns = [user("q"), {"role": "assistant", "content": "", "tool_calls": [call]}]
    with pytest.raises(InvalidRow, match=r"tool call 1: 'arguments' nest more than 64 levels"):
        to_example({"messages": turns}, "messages")
    with pytest.raises(InvalidRow, match=r"^tool 1 nests more than 64 levels deep$"):
        to_example({"messages": [user("q"), bot("a")], "tools": [deep]}, "messages")


def test_a_csv_column_mapped_to_messages_is_read_as_json(tmp_path: Path) -> None:
    path = tmp_path / "chats.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dialog", "id"])
        writer.writerow([json.dumps([user("Hi"), bot("Hello!")]), "1"])
    loaded = load_dataset_file(path, columns={"messages": "dialog"})
    assert loaded.format is Format.MESSAGES
    assert loaded.examples[0].messages == [user("Hi"), bot("Hello!")]
    again = iter_examples(path, "messages", columns={"messages": "dialog"})
    assert [e.messages for e in again] == [[user("Hi"), bot("Hello!")]]


def test_null_fields_read_as_absent_as_arrow_files_hold_them() -> None:
    # A Parquet file's schema gives every row every field, null where the row has none.
    nulls = {"name": None, "tool_calls": None, "tool_call_id": None, "weight": None}
    call = {"id": None, "type": None, "function": {"name": "f", "arguments": None}}
    row = {
        "messages": [
            {"role": "user", "content": "q", **nulls},
            {**nulls, "role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "1", **nulls},
            {"role": "assistant", "content": "a", **nulls},
        ],
        "tools": None,
        "chosen": None,
        "rejected": None,
        "kto_tag": None,
        "images": None,
    }
    example = one(row)
    assert example.messages == [
        user("q"),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {}}}],
        },
        {"role": "tool", "content": "1"},
        bot("a"),
    ]
    assert example.weights is None and example.tools is None
