"""Dataset files in every container they come in: text with byte-order marks and CRLF, CSV
with a pandas index, Parquet, folders saved by Hugging Face `datasets`, and dataset ids found
in the local Hugging Face cache. Rows start at their real lines (or carry their row number),
and every refusal is one line naming the file and what was expected."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sage_tui.core.data import DatasetError, arrow_rows, load_dataset_file
from sage_tui.core.data.files import open_rows, read_rows
from sage_tui.core.data.sources import resolve_dataset
from tests.test_dataset_limits import within
from tests.test_layering import modules_after_import

BOM = b"\xef\xbb\xbf"
REPO = Path(__file__).resolve().parent.parent


def chat(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"q{i}"},
            {"role": "assistant", "content": f"a{i}"},
        ]
    }


def alpaca(i: int) -> dict[str, Any]:
    return {"instruction": f"q{i}", "output": f"a{i}"}


def invalid(where: str, reason: str, total: int = 3) -> str:
    return (
        f"1 of {total} rows are invalid ({where}: {reason});"
        " fix them, or skip invalid rows (--skip-invalid)"
    )


def refused(path: Path) -> str:
    with pytest.raises(DatasetError) as err:
        within(10, lambda: load_dataset_file(path))
    message = str(err.value)
    assert "\n" not in message
    return message


# --- text files: byte-order marks, line endings, CSV shapes -----------------------------------

# (file name, bytes, the rows read as (line, value))
TEXT_ROWS: list[tuple[str, bytes, list[tuple[int, Any]]]] = [
    (
        "bom_crlf.jsonl",
        BOM + b'{"text": "a"}\r\n\r\n{"text": "b"}\r\n',
        [(1, {"text": "a"}), (3, {"text": "b"})],
    ),
    ("bare_cr.jsonl", b'{"text": "a"}\r{"text": "b"}\r', [(1, {"text": "a"}), (2, {"text": "b"})]),
    (
        "u2028.jsonl",  # a raw U+2028 inside a string is no line break
        '{"text": "a\u2028b"}\n{"text": "c"}\n'.encode(),
        [(1, {"text": "a\u2028b"}), (2, {"text": "c"})],
    ),
    (
        "bom_crlf.json",
        BOM + b'[\r\n  {"text": "a"},\r\n\r\n  {"text": "b"}\r\n]\r\n',
        [(2, {"text": "a"}), (4, {"text": "b"})],
    ),
    (
        "bare_cr.json",
        b'[\r  {"text": "a"},\r  {"text": "b"}\r]',
        [(2, {"text": "a"}), (3, {"text": "b"})],
    ),
    (
        "bom_lines.json",  # JSON lines saved as .json, with a mark and CRLF
        BOM + b'{"text": "a"}\r\n{"text": "b"}\r\n',
        [(1, {"text": "a"}), (2, {"text": "b"})],
    ),
    (
        "bom_crlf.csv",
        BOM + b'text,messages\r\n"two\r\nlines",[]\r\n\r\nb,\r\n',
        [(2, {"text": "two\r\nlines", "messages": []}), (5, {"text": "b", "messages": ""})],
    ),
    (
        "index.csv",  # df.to_csv(): the index's header cell is empty
        b",instruction,output\n0,q,a\n1,r,b\n",
        [(2, {"instruction": "q", "output": "a"}), (3, {"instruction": "r", "output": "b"})],
    ),
    (
        "unnamed.csv",  # read back with pandas and saved again
        b"Unnamed: 0,text\n0,a\n",
        [(2, {"text": "a"})],
    ),
    (
        "multi_line_cells.csv",
        b'text,note\n"one\ntwo\nthree","x\ny"\nb,\n',
        [(2, {"text": "one\ntwo\nthree", "note": "x\ny"}), (6, {"text": "b", "note": ""})],
    ),
    (
        "bare_cr_cells.csv",  # old Mac line endings, inside a quoted cell too
        b'text\r"a\rb"\rc\r',
        [(2, {"text": "a\rb"}), (4, {"text": "c"})],
    ),
]


@pytest.mark.parametrize(("name", "data", "expected"), TEXT_ROWS, ids=[c[0] for c in TEXT_ROWS])
def test_text_files_rows_start_at_their_real_lines(
    tmp_path: Path, name: str, data: bytes, expected: list[tuple[int, Any]]
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    rows, _ = read_rows(path)
    assert [(r.line, r.value) for r in rows] == expected
    assert all(r.error is None for r in rows)


# (file name, bytes, the message after "<path>: " or "<path> ")
TEXT_REFUSED: list[tuple[str, bytes, str]] = [
    (
        "crlf_bad_row.jsonl",
        BOM + b'{"text": "a"}\r\n{"text": "b"}\r\n{"txt": "c"}\r\n',
        invalid("line 3", "missing 'text'"),
    ),
    (
        "bare_cr_bad_row.jsonl",
        b'{"text": "a"}\r{"text": "b"}\r{"text": \r',
        invalid("line 3", "not valid JSON: Expecting value (column 9)"),
    ),
    (
        "bom_bad.json",
        BOM + b'[\r\n  {"text": "a"},\r\n  {"text": "b"\r\n]',
        "not valid JSON at line 4, column 1: Expecting ',' delimiter",
    ),
    (
        "bare_cr_bad.json",
        b'[\r  {"text": "a"},\r  {"text": "b"}\r  {"text": "c"}\r]',
        "not valid JSON at line 4, column 3: Expecting ',' delimiter",
    ),
    (
        "bom_not_utf8.json",
        BOM + b'{"text": "caf\xe9"}',
        "line 1 is not valid UTF-8 (byte 0xe9 at column 14); save the file as UTF-8",
    ),
    (
        "after_multi_line.csv",  # the bad row comes after a cell spanning three lines
        b'instruction,output\r\n"one\r\ntwo\r\nthree",a\r\nq,\r\nr,b\r\n',
        invalid("line 5", "empty 'output'"),
    ),
    (
        "after_multi_line_index.csv",
        b',instruction,output\n0,"one\ntwo",a\n1,q,\n2,r,b\n',
        invalid("line 4", "empty 'output'"),
    ),
    (
        "only_index.csv",
        b"Unnamed: 0\n0\n",
        "line 1: the header row names no columns (the first line of a .csv names them,"
        " for instance instruction,output)",
    ),
    (
        "bare_cr_after_multi_line.csv",
        b'instruction,output\r"one\rtwo",a\rq,\rr,b\r',
        invalid("line 4", "empty 'output'"),
    ),
    (
        "utf16.jsonl",
        '{"text": "a"}\n'.encode("utf-16"),
        "is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8",
    ),
    (
        "utf16.csv",
        "text\na\n".encode("utf-16"),
        "is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8",
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "expected"), TEXT_REFUSED, ids=[c[0] for c in TEXT_REFUSED]
)
def test_text_files_errors_name_the_real_line(
    tmp_path: Path, name: str, data: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    assert refused(path) in (f"{path}: {expected}", f"{path} {expected}")


# --- Parquet ----------------------------------------------------------------------------------


def test_parquet_rows_are_dicts_numbered_by_row(tmp_path: Path) -> None:
    path = tmp_path / "chat.parquet"
    count = arrow_rows.BATCH_ROWS * 2 + 7  # several batches, and row groups across them
    pq.write_table(pa.Table.from_pylist([chat(i) for i in range(count)]), path, row_group_size=100)
    rows = open_rows(path)
    assert rows.unit == "row" and not rows.in_array
    read = list(rows)
    assert [(r.line, r.index) for r in read[:2]] == [(1, 0), (2, 1)]
    assert read[-1].line == count and read[-1].value == chat(count - 1)
    loaded = load_dataset_file(path)
    assert loaded.usable == count and loaded.format.value == "messages"
    assert loaded.examples[3].messages == chat(3)["messages"]


def test_parquet_bad_rows_are_named_by_row(tmp_path: Path) -> None:
    path = tmp_path / "alpaca.parquet"
    rows = [alpaca(0), {"instruction": "q", "output": None}, alpaca(2)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert refused(path) == f"{path}: " + invalid("row 2", "missing 'output'")


def test_a_parquet_row_over_the_cap_is_a_bad_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(arrow_rows, "MAX_ROW_CHARS", 1000)
    path = tmp_path / "long.parquet"
    texts = ["a", "é" * 600, "x" * 1001, "b"]  # 1,200 bytes but 600 characters: kept
    pq.write_table(pa.table({"text": texts}), path)
    read = list(open_rows(path))
    assert [r.error for r in read] == [
        None,
        None,
        "longer than 67,108,864 characters (the most one row may hold)",
        None,
    ]
    assert read[1].value == {"text": "é" * 600}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "not a Parquet file (Parquet file size is 0 bytes)"),
        (
            b'{"text": "a"}\n' * 10,
            "not a Parquet file (Parquet magic bytes not found in footer. Either the file is"
            " corrupted or this is not a parquet file.)",
        ),
    ],
    ids=["empty", "json-lines"],
)
def test_a_file_that_is_not_parquet_is_refused(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "fake.parquet"
    path.write_bytes(data)
    assert refused(path) == f"{path}: {expected}"


def test_a_parquet_file_broken_inside_is_refused_at_the_rows_it_breaks(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    rows = [{"text": f"row {i} " + "x" * 50} for i in range(1000)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=500)
    column = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    # The footer is whole, so the file opens; the batch reaching into row group 2 breaks.
    read = open_rows(path)
    with pytest.raises(DatasetError) as err:
        list(read)
    message = str(err.value)
    assert message.startswith(f"{path}: cannot read the rows from row 257 on (")
    assert message.isprintable()


def test_a_fifo_named_parquet_is_refused_before_any_read(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    os.mkfifo(path)
    assert refused(path).startswith(f"{path} is a named pipe (FIFO), not a dataset file")


# --- folders saved by datasets ----------------------------------------------------------------


def saved(path: Path, rows: list[dict[str, Any]], shards: int = 1) -> Path:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path), num_shards=shards)
    return path


def test_a_saved_dataset_is_read_in_the_order_state_json_lists(tmp_path: Path) -> None:
    folder = saved(tmp_path / "chat", [chat(i) for i in range(5)], shards=2)
    rows = open_rows(folder)
    assert rows.unit == "row"
    assert [(r.line, r.value) for r in rows] == [(i + 1, chat(i)) for i in range(5)]

    state = json.loads((folder / "state.json").read_text())
    state["_data_files"].reverse()
    (folder / "state.json").write_text(json.dumps(state))
    first = (folder / state["_data_files"][0]["filename"]).name
    assert first == "data-00001-of-00002.arrow"
    assert [r.value for r in open_rows(folder)] == [chat(i) for i in (3, 4, 0, 1, 2)]
    assert load_dataset_file(folder).usable == 5


def test_a_saved_dataset_names_its_bad_rows_by_row(tmp_path: Path) -> None:
    folder = saved(tmp_path / "al", [alpaca(0), alpaca(1), {"instruction": "q", "output": ""}])
    assert refused(folder) == f"{folder}: " + invalid("row 3", "empty 'output'")


def test_a_dataset_dict_reads_train_or_its_only_split(tmp_path: Path) -> None:
    import datasets

    train = datasets.Dataset.from_list([chat(i) for i in range(3)])
    test = datasets.Dataset.from_list([chat(9)])
    both = tmp_path / "both"
    datasets.DatasetDict({"test": test, "train": train}).save_to_disk(str(both))
    assert [r.value for r in open_rows(both)] == [chat(i) for i in range(3)]

    only = tmp_path / "only"
    datasets.DatasetDict({"validation": test}).save_to_disk(str(only))
    assert [r.value for r in open_rows(only)] == [chat(9)]

    many = tmp_path / "many"
    datasets.DatasetDict({"validation": test, "test": test}).save_to_disk(str(many))
    assert refused(many) == (
        f"{many}: a DatasetDict with the splits validation, test, none of them train;"
        f" open one, for instance {many / 'validation'}"
    )


def test_broken_saved_folders_are_refused_in_one_line(tmp_path: Path) -> None:
    folder = saved(tmp_path / "gone", [chat(i) for i in range(4)], shards=2)
    (folder / "data-00001-of-00002.arrow").unlink()
    assert refused(folder) == (
        f"{folder}: state.json lists data-00001-of-00002.arrow, missing from the folder"
    )

    escape = saved(tmp_path / "escape", [chat(0)])
    (escape / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../x.arrow"}]}))
    assert refused(escape) == (
        f'{escape / "state.json"}: expected a "_data_files" list of'
        ' {"filename": "data-00000-of-00001.arrow"} entries, as datasets\' save_to_disk writes'
    )

    garbled = saved(tmp_path / "garbled", [chat(0)])
    (garbled / "data-00000-of-00001.arrow").write_bytes(b"not arrow at all")
    assert refused(garbled).startswith(
        f"{garbled / 'data-00000-of-00001.arrow'}: not an Arrow stream as datasets'"
        " save_to_disk writes ("
    )

    fifo = saved(tmp_path / "fifo", [chat(0)])
    (fifo / "data-00000-of-00001.arrow").unlink()
    os.mkfifo(fifo / "data-00000-of-00001.arrow")
    assert refused(fifo).startswith(
        f"{fifo / 'data-00000-of-00001.arrow'} is a named pipe (FIFO), not a dataset file"
    )


def test_a_folder_of_parquet_shards_reads_its_train_split(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(2):
        table = pa.Table.from_pylist([chat(10 * i + j) for j in range(3)])
        pq.write_table(table, folder / f"train-{i:05d}-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist([chat(99)]), folder / "test-00000-of-00001.parquet")
    rows = list(open_rows(folder))
    assert [(r.line, r.value) for r in rows] == [
        (n + 1, chat(i)) for n, i in enumerate([0, 1, 2, 10, 11, 12])
    ]

    (folder / "train-00001-of-00002.parquet").unlink()
    assert refused(folder) == f"{folder}: the train split is sharded, and shard 1 of 2 is missing"


def test_unnamed_parquet_parts_are_one_table_read_in_their_order(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in (10, 2, 1):
        pq.write_table(pa.Table.from_pylist([chat(i)]), folder / f"part-{i}.parquet")
    assert [r.value for r in open_rows(folder)] == [chat(1), chat(2), chat(10)]


def test_other_folders_say_what_they_hold_and_what_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "raw").mkdir(parents=True)
    (folder / "a.txt").write_text("x")
    (folder / "rows.jsonl").write_text('{"text": "a"}\n')
    assert refused(folder) == (
        f"{folder} is a folder, not a dataset file, and no dataset saved by datasets"
        " (it holds a.txt, raw/, rows.jsonl); open a .jsonl, .json, .csv or .parquet file,"
        " a folder saved by datasets' save_to_disk (state.json and dataset_info.json, or"
        " dataset_dict.json), or a folder of the Parquet shards of a split"
        " (train-00000-of-00002.parquet, ...)"
    )


def test_the_readers_import_neither_pyarrow_nor_huggingface_hub() -> None:
    loaded = modules_after_import("sage_tui.core.data.arrow_rows", "sage_tui.core.data.sources")
    assert loaded.isdisjoint({"pyarrow", "huggingface_hub", "datasets"})


# --- memory -----------------------------------------------------------------------------------

# Peak memory of load_dataset_file in a fresh interpreter, pyarrow imported beforehand.
_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    import pyarrow.parquet
    from sage_tui.core.data import load_dataset_file
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loaded = load_dataset_file(Path(sys.argv[1]), keep=1000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mib": (peak - before) / 1024, "rows": loaded.usable}))
    """
)


def test_reading_a_big_parquet_file_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    filler = "lorem ipsum dolor sit amet " * 20
    count = 150_000  # about 85 MiB of text, several hundred MiB as Python objects
    with pq.ParquetWriter(
        path, pa.schema([("instruction", pa.string()), ("output", pa.string())])
    ) as out:
        for start in range(0, count, 50_000):  # row groups of 50,000 rows, as pandas writes
            out.write_table(
                pa.table(
                    {
                        "instruction": [f"q{i} {filler}" for i in range(start, start + 50_000)],
                        "output": [f"a{i} {filler}" for i in range(start, start + 50_000)],
                    }
                )
            )
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=True,
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["rows"] == count
    # Read whole (pq.read_table(path).to_pylist()) it took about 550 MiB; streamed, about 45
    # (pyarrow's pools and one row group's pages), the same for a file three times as long.
    assert found["growth_mib"] < 100, found


# --- dataset ids in the local Hugging Face cache ----------------------------------------------

REVISION = "0123456789abcdef0123456789abcdef01234567"


def cached(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """A dataset downloaded into `cache` as huggingface_hub lays it out: blobs named by their
    hash, the snapshot's files linked to them, refs/main naming the revision."""
    repo = cache / ("datasets--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    (repo / "blobs").mkdir(parents=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # so no id is also a relative path
    return cache


def test_an_existing_path_is_returned_as_it_is(
    tmp_path: Path, hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(jsonl_bytes([chat(0)]))
    assert resolve_dataset(str(path)) == path
    assert resolve_dataset("rows.jsonl") == Path("rows.jsonl")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_dataset("~/rows.jsonl") == path


# (files in the snapshot, the path returned relative to it)
HUB_LAYOUTS: list[tuple[dict[str, bytes], str]] = [
    (
        {
            "README.md": b"# a dataset",
            "data/train-00000-of-00001.parquet": parquet_bytes([chat(0)]),
            "data/test-00000-of-00001.parquet": parquet_bytes([chat(9)]),
        },
        "data/train-00000-of-00001.parquet",
    ),
    (
        {
            "data/train-00000-of-00002-3f2a9c1d.parquet": parquet_bytes([chat(0)]),
            "data/train-00001-of-00002-77b0e4aa.parquet": parquet_bytes([chat(1)]),
            "data/validation-00000-of-00001-0c1e2f3a.parquet": parquet_bytes([chat(9)]),
        },
        "data",
    ),
    (
        {"train.jsonl": jsonl_bytes([chat(0)]), "test.jsonl": jsonl_bytes([chat(9)])},
        "train.jsonl",
    ),
    ({"alpaca_data.json": json.dumps([alpaca(0)]).encode()}, "alpaca_data.json"),
    ({"test.csv": b"text\na\n"}, "test.csv"),  # the only split
    ({"train/part-0.parquet": parquet_bytes([chat(0)])}, "train/part-0.parquet"),
]


@pytest.mark.parametrize(("files", "expected"), HUB_LAYOUTS, ids=[e for _, e in HUB_LAYOUTS])
def test_a_cached_dataset_id_gives_its_train_split(
    hub_cache: Path, files: dict[str, bytes], expected: str
) -> None:
    snapshot = cached(hub_cache, "owner/name", files)
    resolved = resolve_dataset("owner/name")
    assert resolved == snapshot / expected
    assert load_dataset_file(resolved).usable >= 1


def test_a_sharded_train_split_reads_its_shards_in_order(hub_cache: Path) -> None:
    cached(
        hub_cache,
        "owner/shards",
        {
            f"data/train-{i:05d}-of-00003.parquet": parquet_bytes([chat(i), chat(10 + i)])
            for i in (2, 0, 1)
        },
    )
    loaded = load_dataset_file(resolve_dataset("owner/shards"))
    assert [e.messages for e in loaded.examples] == [
        chat(i)["messages"] for i in (0, 10, 1, 11, 2, 12)
    ]


def test_a_saved_folder_pushed_to_the_hub_is_returned_whole(
    tmp_path: Path, hub_cache: Path
) -> None:
    folder = saved(tmp_path / "made", [chat(0), chat(1)])
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    snapshot = cached(hub_cache, "owner/saved", files)
    assert resolve_dataset("owner/saved") == snapshot
    assert load_dataset_file(snapshot).usable == 2


def test_hf_home_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    snapshot = cached(tmp_path / "home" / "hub", "squad", {"train.jsonl": jsonl_bytes([chat(0)])})
    assert resolve_dataset("squad") == snapshot / "train.jsonl"


def test_ids_not_in_the_cache_say_how_to_download_them(hub_cache: Path) -> None:
    with pytest.raises(DatasetError) as err:
        resolve_dataset("owner/missing")
    assert str(err.value) == (
        f"'owner/missing' is neither a file nor a dataset in the local Hugging Face cache"
        f" (looked in {hub_cache}); download it first with:"
        " hf download --repo-type dataset owner/missing"
    )
    with pytest.raises(DatasetError) as err:
        resolve_dataset("./some/where/rows.jsonl")
    assert str(err.value) == "./some/where/rows.jsonl does not exist"


# (files in the snapshot, the message after "'owner/name' in the local Hugging Face cache
# (SNAPSHOT)")
HUB_REFUSED: list[tuple[dict[str, bytes], str]] = [
    (
        {"README.md": b"#", "data.tar.gz": b"x"},
        " holds no data file sage-tui reads (.jsonl, .json, .csv, .parquet;"
        " found: README.md, data.tar.gz)",
    ),
    (
        {"test.jsonl": jsonl_bytes([chat(0)]), "validation.jsonl": jsonl_bytes([chat(1)])},
        ": holds the splits test, validation, none of them train; open one, for instance"
        " {snapshot}/test.jsonl",
    ),
    (
        {
            "train-00000-of-00002.jsonl": jsonl_bytes([chat(0)]),
            "train-00001-of-00002.jsonl": jsonl_bytes([chat(1)]),
        },
        ": its train split is 2 files (train-00000-of-00002.jsonl, train-00001-of-00002.jsonl);"
        " a dataset is one file or a folder of the Parquet shards of one split: open one of"
        " them, or join them into one .jsonl",
    ),
]


@pytest.mark.parametrize(("files", "expected"), HUB_REFUSED, ids=["no-data", "no-train", "jsonl"])
def test_cached_datasets_that_cannot_be_read_are_refused_in_one_line(
    hub_cache: Path, files: dict[str, bytes], expected: str
) -> None:
    snapshot = cached(hub_cache, "owner/name", files)
    with pytest.raises(DatasetError) as err:
        resolve_dataset("owner/name")
    where = f"'owner/name' in the local Hugging Face cache ({snapshot})"
    assert str(err.value) == where + expected.format(snapshot=snapshot)


def test_a_missing_file_is_not_taken_for_a_dataset_id() -> None:
    with pytest.raises(DatasetError) as err:
        resolve_dataset("data/train.jsonl")
    assert str(err.value) == "data/train.jsonl does not exist"
