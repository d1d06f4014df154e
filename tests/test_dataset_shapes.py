"""Dataset rows in the shapes people bring: column mappings, and where a problem is shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sage_tui.core.data import DatasetError, Format, RowProblem, iter_examples, load_dataset_file
from sage_tui.core.data.columns import STANDARD_COLUMNS, parse_columns


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
