"""Big and strange dataset files: only regular files are read, memory stays bounded, and
deep nesting, enormous rows, huge CSV cells, NUL bytes and blank files give a one-line
DatasetError naming the line (or a valid result), never a traceback."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sage_tui.core.data import DatasetError, load_dataset_file, split
from sage_tui.core.data import files as dataset_files
from sage_tui.core.data.lines import MAX_ROW_CHARS
from sage_tui.core.training.job_folder import JobFolder
from sage_tui.core.training.spec import JobSpec
from sage_tui.core.training.training_rows import write_training_rows
from tests.support.dataset_memory import ALPACA, measure, write_alpaca_jsonl

GOOD = json.dumps({"instruction": "q", "output": "a"})
TEXT = json.dumps({"text": "a"})
DEEP = "[" * 100_000 + "]" * 100_000
TOO_LONG = f"longer than {MAX_ROW_CHARS:,} characters (the most one row may hold)"


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """`call()`'s result or exception, failing the test (not hanging it) after `seconds`."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still reading after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- only regular files -----------------------------------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays


def _folder(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (_fifo, "is a named pipe (FIFO), not a dataset file"),
        (_dev_zero, "is a character device, not a dataset file"),
        (_socket, "is a socket, not a dataset file"),
        (_folder, "is a folder, not a dataset file"),
    ],
    ids=["fifo", "dev-zero", "socket", "folder"],
)
def test_only_regular_files_are_read(
    tmp_path: Path, make: Callable[[Path], None], what: str
) -> None:
    path = tmp_path / "x.jsonl"
    make(path)
    with pytest.raises(DatasetError) as err:
        within(5, lambda: load_dataset_file(path))
    message = str(err.value)
    assert message.startswith(f"{path} {what}") and "\n" not in message


# --- limits, table-driven ---------------------------------------------------------------------


def invalid(line: int, reason: str, total: int = 3) -> str:
    return (
        f"1 of {total} rows are invalid (line {line}: {reason});"
        " fix them, or skip invalid rows (--skip-invalid)"
    )


# (file name, content, expected message after "<path>: " or, for a valid file, the rows read)
CASES: list[tuple[str, str | bytes, str | int]] = [
    ("deep.jsonl", f"{GOOD}\n{DEEP}\n{GOOD}\n", invalid(2, "not valid JSON: nested too deeply")),
    ("deep.json", DEEP, "not valid JSON: nested too deeply for the parser"),
    (
        "deep_cell.csv",
        f"text,messages\na,{DEEP}\n",
        "all 1 rows are invalid as messages (line 2: 'messages' must be a list, got string)",
    ),
    (
        "huge_row.jsonl",
        f"{TEXT}\n" + json.dumps({"text": "x" * MAX_ROW_CHARS}) + f"\n{TEXT}\n",
        invalid(2, TOO_LONG),
    ),
    ("huge_line.csv", "text\nb\n" + "x" * (MAX_ROW_CHARS + 1) + "\nc\n", f"line 3: {TOO_LONG}"),
    (
        "huge_cell.csv",  # a quoted cell whose lines are each under the cap
        'text\nb\n"' + ("y" * (MAX_ROW_CHARS // 2 + 1) + "\n") * 2 + '"\n',
        f"line 4: a cell is {TOO_LONG}",
    ),
    ("long_cell.csv", "text\n" + "x" * 200_000 + "\nb\n", 2),  # over csv's own 131072
    (
        "nul.jsonl",
        f'{TEXT}\n{{"text": "a\x00b"}}\n\x00\n',
        "2 of 3 rows are invalid (line 2: not valid JSON: Invalid control character at"
        " (column 12); line 3: not valid JSON: Expecting value (column 1));"
        " fix them, or skip invalid rows (--skip-invalid)",
    ),
    ("nul.csv", "text\na\x00b\n", 1),  # a NUL in a cell is text (shown made visible)
    ("blank.jsonl", " \n\t\n\n", "has no rows"),
    ("blank.json", " \n\t\n", "has no rows"),
    (
        "blank.csv",
        " \n\t\n",
        "line 1: the header row names no columns (the first line of a .csv names them,"
        " for instance instruction,output)",
    ),
    ("no_newline.jsonl", f"{TEXT}\n{TEXT}", 2),
    ("no_newline.csv", "text\na\nb", 2),
    ("crlf.jsonl", f"{TEXT}\r\n{TEXT}\r\n", 2),
    (
        "bad_utf8_late.jsonl",
        (f"{TEXT}\n" * 30).encode() + b'{"text": "caf\xe9"}\n',
        "line 31 is not valid UTF-8 (byte 0xe9 at column 14); save the file as UTF-8",
    ),
]


@pytest.mark.parametrize(("name", "content", "expected"), CASES, ids=[c[0] for c in CASES])
def test_strange_files_give_one_line_naming_the_line(
    tmp_path: Path, name: str, content: str | bytes, expected: str | int
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    if isinstance(expected, int):
        assert load_dataset_file(path).usable == expected
        return
    with pytest.raises(DatasetError) as err:
        load_dataset_file(path)
    assert str(err.value) in (f"{path}: {expected}", f"{path} {expected}")


def test_a_big_json_document_is_refused_with_the_way_to_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_files, "MAX_JSON_BYTES", 1024 * 1024)
    path = tmp_path / "big.json"
    path.write_text(json.dumps([{"text": "x" * 1000}] * 1100))
    with pytest.raises(DatasetError) as err:
        load_dataset_file(path)
    assert str(err.value) == (
        f"{path}: a .json file is read whole, up to 1 MiB, and this one holds 1 MiB; save it"
        " as JSON lines (.jsonl, one row a line, read row by row), for instance with:"
        " jq -c '.[]' FILE.json > FILE.jsonl"
    )


# --- bounded memory ---------------------------------------------------------------------------


def test_checking_and_preparing_a_big_file_keep_memory_flat(
    tmp_path: Path, builtin_model_dir: Path
) -> None:
    if not ALPACA.exists():
        pytest.skip(f"{ALPACA} is not on this machine")
    path = tmp_path / "big.jsonl"
    rows = write_alpaca_jsonl(path, 80 * 1024 * 1024)
    found = measure("check", path, tmp_path, timeout=60)
    assert found.rows == rows
    # Reading it whole took over 500 MiB; streaming holds a few thousand rows at most.
    assert found.growth_mib < 20, found
    # The runner's data step tokenizes every row (about 1 ms each here): a smaller file.
    small = tmp_path / "small.jsonl"
    rows = write_alpaca_jsonl(small, 8 * 1024 * 1024)
    found = measure("train_rows", small, tmp_path, timeout=120, model=builtin_model_dir)
    assert found.rows == rows
    assert found.growth_mib < 20, found


def test_a_check_keeps_the_first_rows_and_counts_them_all(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": f"{{{{name}}}} {i}"}) + "\n" for i in range(50)))
    loaded = load_dataset_file(path, keep=10)
    assert len(loaded.examples) == 10 and loaded.usable == 50 and loaded.total_rows == 50
    assert loaded.unfilled == {"name": 50}
    assert loaded.warnings == [
        f"{path}: 50 of 50 rows hold unfilled placeholders {{{{name}}}};"
        " fill them in before training"
    ]


def test_the_runners_rows_are_split_as_split_does(tmp_path: Path, builtin_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(40)))
    spec = JobSpec(
        task_id="j",
        base_model="m",
        base_path=str(tmp_path),
        dataset=str(path),
        seed=3,
        eval_fraction=0.2,
    )
    folder = JobFolder(tmp_path / "j")
    train, evaluation = split(load_dataset_file(path).examples, spec.eval_fraction, seed=3)
    assert write_training_rows(spec, folder, tokenizer) == (len(train), len(evaluation))

    def texts(rows: Path) -> list[str]:
        ids = [json.loads(line)["input_ids"] for line in rows.read_text().splitlines()]
        return [tokenizer.decode(row) for row in ids]

    eos = tokenizer.eos_token
    assert texts(folder.train_rows) == [e.text + eos for e in train]
    assert texts(folder.eval_rows) == [e.text + eos for e in evaluation] != []
