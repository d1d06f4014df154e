"""Reading dataset files: each row found at its own line, and bad files and rows refused in
one line naming the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sage_tui.core.data import DatasetError, load_dataset_file
from sage_tui.core.data.files import read_rows
from tests.test_datasets import write_rows


def test_rows_start_at_their_own_lines(tmp_path: Path) -> None:
    array = tmp_path / "rows.json"
    array.write_text('[\n  {"text": "a"},\n\n  {"text":\n    "b"}\n]')
    rows, in_array = read_rows(array)
    assert in_array
    assert [(r.line, r.index, r.value) for r in rows] == [
        (2, 0, {"text": "a"}),
        (4, 1, {"text": "b"}),
    ]

    lines = tmp_path / "rows.jsonl"
    lines.write_text('{"text": "a"}\n\n{"text": \n{"text": "c"}\n')
    rows, in_array = read_rows(lines)
    assert not in_array
    assert [(r.line, r.index) for r in rows] == [(1, 0), (3, 1), (4, 2)]
    assert rows[1].value is None and (rows[1].error or "").startswith("not valid JSON")

    table = tmp_path / "rows.csv"
    table.write_text('text,messages\n"two\nlines",[]\nb,[oops\n')
    rows, _ = read_rows(table)
    assert [(r.line, r.value) for r in rows] == [
        (2, {"text": "two\nlines", "messages": []}),
        (4, {"text": "b", "messages": "[oops"}),
    ]


def test_json_object_with_one_list_field(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.json"
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c"}]
    path.write_text(json.dumps({"version": 2, "data": rows}, indent=1))
    with pytest.raises(DatasetError) as err:
        load_dataset_file(path)
    # The second row starts on line 8 of the indented file.
    assert str(err.value) == (
        f"{path}: 1 of 2 rows are invalid (line 8 (row 2): missing 'completion');"
        " fix them, or skip invalid rows (--skip-invalid)"
    )


# --- bad rows ---------------------------------------------------------------------------------

GOOD = {"instruction": "q", "output": "a"}
GOOD_LINE = json.dumps(GOOD)
USER = {"role": "user", "content": "Hi"}


def chat_line(*messages: dict[str, Any]) -> str:
    return json.dumps({"messages": list(messages)})


def invalid(line: int, reason: str, total: int = 3) -> str:
    return (
        f"1 of {total} rows are invalid (line {line}: {reason});"
        " fix them, or skip invalid rows (--skip-invalid)"
    )


# (file name, lines (joined with newlines) or raw bytes, expected message after "<path>: ")
BAD_CASES: list[tuple[str, str | bytes, str]] = [
    (
        "missing.jsonl",
        f'{GOOD_LINE}\n{GOOD_LINE}\n{{"instruction": "q"}}\n',
        invalid(3, "missing 'output'"),
    ),
    (
        "wrong_type.jsonl",
        # (a number there reads as a score: kinds.py refuses that row as reward data)
        f'{GOOD_LINE}\n{{"instruction": "q", "output": true}}\n{GOOD_LINE}\n',
        invalid(2, "'output' must be a string, got boolean"),
    ),
    (
        "empty_content.jsonl",
        "\n".join(
            [
                chat_line(USER, {"role": "assistant", "content": "ok"}),
                chat_line(USER, {"role": "assistant", "content": "   "}),
                chat_line(USER, {"role": "assistant", "content": "ok"}),
            ]
        ),
        invalid(2, "message 2 has empty 'content'"),
    ),
    (
        "content_type.jsonl",
        "\n".join(
            [
                chat_line(USER, {"role": "assistant", "content": ["ok"]}),
                chat_line(USER, {"role": "assistant", "content": "ok"}),
                chat_line(USER, {"role": "assistant", "content": "ok"}),
            ]
        ),
        invalid(1, "message 2: 'content' must be a string, got array"),
    ),
    (
        "not_object.jsonl",
        f"{GOOD_LINE}\n\n[1, 2]\n{GOOD_LINE}\n",
        invalid(3, "expected a JSON object, got array"),
    ),
    (
        "broken.jsonl",
        f'{GOOD_LINE}\n{GOOD_LINE}\n{{"instruction": "q",\n',
        invalid(3, "not valid JSON: Expecting property name enclosed in double quotes (column 21)"),
    ),
    (
        "not_utf8.jsonl",
        GOOD_LINE.encode() + b'\n{"instruction": "caf\xe9", "output": "a"}\n',
        "line 2 is not valid UTF-8 (byte 0xe9 at column 21); save the file as UTF-8",
    ),
    (
        "last_turn.jsonl",
        "\n".join(
            [chat_line(USER, {"role": "assistant", "content": "ok"})] * 2 + [chat_line(USER)]
        ),
        invalid(3, "last turn is 'user', expected 'assistant'"),
    ),
    (
        "no_user.jsonl",
        "\n".join(
            [chat_line(USER, {"role": "assistant", "content": "ok"})] * 2
            + [chat_line({"role": "assistant", "content": "ok"})]
        ),
        invalid(3, "no user turn"),
    ),
    (
        "unknown_role.jsonl",
        "\n".join(
            [chat_line(USER, {"role": "assistant", "content": "ok"})] * 2
            + [chat_line(USER, {"role": "bot", "content": "ok"})]
        ),
        invalid(3, 'message 2 has unknown role "bot" (expected system, user, assistant, tool)'),
    ),
    (
        "unknown_from.json",
        json.dumps(
            [{"conversations": [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]}]
            * 2,
            indent=2,
        ),
        "all 2 rows are invalid as sharegpt (line 2 (row 1): turn 2 has unknown 'from' value"
        ' "robot" (expected human, user, gpt, assistant, model, system, function_call,'
        " observation, tool); line 14 (row 2): turn 2 has unknown 'from' value"
        ' "robot" (expected human, user, gpt, assistant, model, system, function_call,'
        " observation, tool))",
    ),
    (
        "array_row.json",
        json.dumps([GOOD, {"instruction": "q"}, GOOD], indent=2),
        invalid(6, "missing 'output'").replace("line 6:", "line 6 (row 2):"),
    ),
    (
        "csv_row.csv",
        'instruction,input,output\nq,,a\n"multi\nline",,\nq,,a\n',
        invalid(3, "empty 'output'"),
    ),
    ("empty.jsonl", "\n\n", "has no rows"),
    ("empty.json", "[]", "has no rows"),
    ("empty.csv", "", "has no rows"),
    (
        "unknown_keys.jsonl",
        '{"question": "q", "answer": "a"}\n',
        "cannot tell the format from the keys found (answer, question); formats understood:"
        " messages (messages); sharegpt (conversations); alpaca (instruction, input, output;"
        " or instruction, context, response); prompt_completion (prompt, completion);"
        " text (text)",
    ),
    (
        "mixed.jsonl",
        '{"text": "t"}\n{"prompt": "p", "completion": "c"}\n',
        "cannot tell the format, the first 2 rows look like prompt_completion (1), text (1);"
        " pass --format (formats understood: messages (messages); sharegpt (conversations);"
        " alpaca (instruction, input, output; or instruction, context, response);"
        " prompt_completion (prompt, completion); text (text))",
    ),
    (
        "data.txt",
        "hello",
        "unsupported file type '.txt' (supported: .jsonl, .json, .csv, .parquet, or a folder"
        " saved by datasets)",
    ),
    (
        "broken.json",
        '[\n  {"text": "a"},\n  {"text": "b"\n]',
        "not valid JSON at line 4, column 1: Expecting ',' delimiter",
    ),
    (
        "scalar.json",
        '"just a string"',
        "expected a JSON array of rows, got string",
    ),
]


@pytest.mark.parametrize(("name", "content", "expected"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_files_give_one_line_naming_file_and_line(
    tmp_path: Path, name: str, content: str | bytes, expected: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        load_dataset_file(path)
    message = str(err.value)
    assert "\n" not in message
    separator = " " if expected == "has no rows" else ": "
    assert message == f"{path}{separator}{expected}"


def test_skip_invalid_keeps_good_rows_and_reports_the_rest(tmp_path: Path) -> None:
    lines = [GOOD_LINE] * 10
    for bad in (1, 4, 5, 6, 7, 8, 9):
        lines[bad] = '{"instruction": "q"}'
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines))

    with pytest.raises(DatasetError) as err:
        load_dataset_file(path)
    assert str(err.value) == (
        f"{path}: 7 of 10 rows are invalid (line 2: missing 'output'; line 5: missing 'output';"
        " line 6: missing 'output'; line 7: missing 'output'; line 8: missing 'output';"
        " and 2 more); fix them, or skip invalid rows (--skip-invalid)"
    )

    loaded = load_dataset_file(path, skip_invalid=True)
    assert len(loaded.examples) == 3 and loaded.skipped == 7 and loaded.total_rows == 10
    assert [p.line for p in loaded.problems] == [2, 5, 6, 7, 8, 9, 10]
    assert [p.row_index for p in loaded.problems] == [1, 4, 5, 6, 7, 8, 9]
    assert [e.line for e in loaded.examples] == [1, 3, 4]


def test_zero_valid_rows_refused_even_when_skipping(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "bad.jsonl", [{"instruction": "q"}, {"instruction": "r"}])
    with pytest.raises(DatasetError) as err:
        load_dataset_file(path, skip_invalid=True)
    assert str(err.value) == (
        f"{path}: all 2 rows are invalid as alpaca"
        " (line 1: missing 'output'; line 2: missing 'output')"
    )


def test_missing_and_folder_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset_file(tmp_path / "nope.jsonl")
    folder = tmp_path / "dir.json"
    folder.mkdir()
    with pytest.raises(DatasetError, match="is a folder"):
        load_dataset_file(folder)


def test_json_lines_saved_as_json_still_load(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert [e.text for e in load_dataset_file(path).examples] == ["a", "b"]
