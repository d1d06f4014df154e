"""Rows of Parquet files and of folders saved by Hugging Face `datasets`, read with pyarrow.

Three kinds of input have no lines, so their rows are numbered (`RowFile.unit` is "row"):

- a `.parquet` file;
- a folder written by `Dataset.save_to_disk` (`state.json`, `dataset_info.json` and
  `data-00000-of-0000N.arrow` shards in Arrow's IPC stream format, read in the order
  `state.json` lists them), or by `DatasetDict.save_to_disk` (`dataset_dict.json` and one
  such folder per split: `train` is read, or the only split);
- a folder of Parquet files: the shards of one split as the Hub names them
  (`train-00000-of-00002.parquet`, `train` chosen as above), or the unnamed parts of one table
  (`part-0.parquet`, ...).

Memory stays bounded whatever the size: record batches are read one at a time and turned into
Python dicts :data:`BATCH_ROWS` rows at a time (nested list and struct columns, such as
`messages`, come as lists of dicts). A row holding more than `lines.MAX_ROW_CHARS` characters
is a row with `error` set, as a JSON line would be.

pyarrow is imported inside the functions: `sage_tui.core` must import fast. `datasets`
itself is not needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sage_tui.core.data.files import Row, RowFile
from sage_tui.core.data.formats import DatasetError
from sage_tui.core.data.lines import MAX_ROW_CHARS, open_regular, too_long

if TYPE_CHECKING:
    import pyarrow as pa

BATCH_ROWS = 256
"""Rows turned into Python objects at a time (each a dict of the row's values)."""

DATASET_DICT = "dataset_dict.json"
STATE = "state.json"
INFO = "dataset_info.json"

# How the Hub and `push_to_hub` name the shards of a split; newer versions add a hash.
_SHARD = re.compile(
    r"(?P<split>.+?)-(?P<index>\d{5})-of-(?P<count>\d{5})(?:-[0-9a-f]+)?\.parquet", re.IGNORECASE
)
_READ_BUFFER = 1024 * 1024
_DIGITS = re.compile(r"(\d+)")
_SHOWN = 8

ACCEPTED = (
    "a .jsonl, .json, .csv or .parquet file, a folder saved by datasets' save_to_disk"
    f" ({STATE} and {INFO}, or {DATASET_DICT}), or a folder of the Parquet shards of a split"
    " (train-00000-of-00002.parquet, ...)"
)
"""What can be opened, for messages that refuse something else."""


def _fail(source: object, what: str) -> DatasetError:
    return DatasetError(f"{source}: {what}")


def _said(err: BaseException) -> str:
    """pyarrow's reason on one line, not too long, with no control characters (it may quote
    bytes of the file)."""
    text = " ".join(str(err).split()) or type(err).__name__
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 200 else text[:197] + "..."


def _names(paths: Sequence[Path], limit: int = _SHOWN) -> str:
    shown = [p.name + ("/" if p.is_dir() else "") for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(shown) + more


def _natural(path: Path) -> list[Any]:
    # part-2 before part-10.
    return [int(p) if p.isdigit() else p for p in _DIGITS.split(path.name)]


# ---------------------------------------------------------------------------------------------
# Record batches


def _parquet_file(source: str, binary: IO[bytes]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # Buffered, not pre-buffered: a row group's column chunks are read a megabyte at a
        # time rather than whole (pandas writes up to a million rows in one group).
        return pq.ParquetFile(binary, buffer_size=_READ_BUFFER, pre_buffer=False)
    except (pa.ArrowException, OSError) as err:
        raise _fail(source, f"not a Parquet file ({_said(err)})") from None


def _arrow_stream(source: str, binary: IO[bytes]) -> Any:
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(binary)
    except (pa.ArrowException, OSError) as err:
        raise _fail(
            source, f"not an Arrow stream as datasets' save_to_disk writes ({_said(err)})"
        ) from None


def _parquet_batches(source: str, binary: IO[bytes]) -> Iterator[pa.RecordBatch]:
    parquet = _parquet_file(source, binary)
    yield from parquet.iter_batches(batch_size=BATCH_ROWS, use_threads=False)


def _arrow_batches(source: str, binary: IO[bytes]) -> Iterator[pa.RecordBatch]:
    yield from _arrow_stream(source, binary)


_Batches = Callable[[str, IO[bytes]], Iterator[Any]]


def _chars(value: Any) -> int:
    """Characters (and bytes) held by one row's values."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(k)) + _chars(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(_chars(v) for v in value)
    return 0


def _batch_rows(batch: pa.RecordBatch) -> Iterator[tuple[Any, str | None]]:
    """(value, error) for each row of `batch`; a row over MAX_ROW_CHARS has no value."""
    for offset in range(0, batch.num_rows, BATCH_ROWS):
        piece = batch.slice(offset, BATCH_ROWS)
        # Characters never outnumber bytes, so a piece that small holds no row too long.
        if piece.nbytes <= MAX_ROW_CHARS:
            for value in piece.to_pylist():
                yield value, None
            continue
        for i in range(piece.num_rows):
            one = piece.slice(i, 1)
            value = one.to_pylist()[0]
            if one.nbytes > MAX_ROW_CHARS and _chars(value) > MAX_ROW_CHARS:
                yield None, too_long()
            else:
                yield value, None


def _rows(shards: Sequence[Path], batches: _Batches) -> Iterator[Row]:
    """The rows of `shards` in order, numbered from 1 across them all."""
    index = 0
    for shard in shards:
        source = str(shard)
        within = 0
        with open_regular(shard) as binary:
            try:
                for batch in batches(source, binary):
                    for value, error in _batch_rows(batch):
                        yield Row(index + 1, index, value, error)
                        index += 1
                        within += 1
            except DatasetError:
                raise
            except Exception as err:  # pyarrow's errors share no base class but Exception
                raise _fail(
                    source, f"cannot read the rows from row {within + 1} on ({_said(err)})"
                ) from None


def _checked(shards: Sequence[Path], opener: Callable[[str, IO[bytes]], Any]) -> None:
    """Each shard opened (footer or schema read) so a broken one is refused up front."""
    for shard in shards:
        with open_regular(shard) as binary:
            opener(str(shard), binary)


def _row_file(path: Path, shards: list[Path], kind: str) -> RowFile:
    if kind == "parquet":
        _checked(shards, _parquet_file)
        return RowFile(path, unit="row", _read=lambda: _rows(shards, _parquet_batches))
    _checked(shards, _arrow_stream)
    return RowFile(path, unit="row", _read=lambda: _rows(shards, _arrow_batches))


def open_parquet(path: Path) -> RowFile:
    """A `.parquet` file, its footer read (DatasetError when it is not Parquet)."""
    return _row_file(path, [path], "parquet")


# ---------------------------------------------------------------------------------------------
# Folders


def _json_file(path: Path) -> Any:
    with open_regular(path) as binary:
        data = binary.read(16 * 1024 * 1024)
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise _fail(path, f"not valid JSON ({_said(err)})") from None


def _plain_name(name: object) -> bool:
    # Names come from the folder's own files: never let one point outside it.
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def pick_split(where: object, splits: Sequence[str], what: str, example: str) -> str:
    """`train` when it is among `splits`, else the only split; DatasetError naming them
    otherwise (`what` says where the splits are, `example` how to open one)."""
    if "train" in splits:
        return "train"
    if len(splits) == 1:
        return splits[0]
    raise _fail(
        where,
        f"{what} the splits {', '.join(splits) or '(none)'}, none of them train;"
        f" open one, for instance {example}",
    )


def _saved_shards(folder: Path) -> list[Path]:
    """The Arrow shards of a `Dataset.save_to_disk` folder, in the order state.json lists."""
    state = _json_file(folder / STATE)
    files = state.get("_data_files") if isinstance(state, dict) else None
    names = [f.get("filename") if isinstance(f, dict) else None for f in files or []]
    if not isinstance(files, list) or not all(_plain_name(n) for n in names):
        raise _fail(
            folder / STATE,
            'expected a "_data_files" list of {"filename": "data-00000-of-00001.arrow"}'
            " entries, as datasets' save_to_disk writes",
        )
    shards = [folder / str(n) for n in names]
    missing = [s for s in shards if not s.exists()]  # open_regular refuses the rest
    if missing:
        raise _fail(folder, f"{STATE} lists {_names(missing)}, missing from the folder")
    return shards


def _dataset_dict_split(folder: Path) -> Path:
    """The split folder of a `DatasetDict.save_to_disk` folder that is read."""
    listing = _json_file(folder / DATASET_DICT)
    splits = listing.get("splits") if isinstance(listing, dict) else None
    if not isinstance(splits, list) or not splits or not all(_plain_name(s) for s in splits):
        raise _fail(
            folder / DATASET_DICT,
            'expected {"splits": ["train", ...]}, as datasets\' save_to_disk writes',
        )
    chosen = pick_split(folder, splits, "a DatasetDict with", str(folder / splits[0]))
    split = folder / chosen
    if not (split / STATE).is_file():
        raise _fail(
            folder, f"the split {chosen} listed in {DATASET_DICT} has no {split.name}/{STATE}"
        )
    return split


def parquet_shards(folder: Path) -> list[Path]:
    """The Parquet files of `folder` that are read, in order: the shards of its train split
    (or only split) when they are named as the Hub names them, else all of them, as the parts
    of one table. Empty when the folder holds no Parquet file; DatasetError when the choice
    is not clear or shards are missing."""
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() == ".parquet" and p.is_file()),
        key=_natural,
    )
    files = [p for p in files if not p.name.startswith(".")]
    named = [(p, _SHARD.fullmatch(p.name)) for p in files]
    if not any(match for _, match in named):
        return files
    loose = [p for p, match in named if match is None]
    if loose:
        raise _fail(
            folder,
            f"holds the shards of splits and other Parquet files ({_names(loose)}); open one file",
        )
    splits: dict[str, list[tuple[Path, re.Match[str]]]] = {}
    for path, match in named:
        assert match is not None
        splits.setdefault(match["split"], []).append((path, match))
    chosen = pick_split(folder, list(splits), "holds Parquet shards of", str(named[0][0]))
    shards = sorted(splits[chosen], key=lambda item: int(item[1]["index"]))
    counts = {int(match["count"]) for _, match in shards}
    indexes = [int(match["index"]) for _, match in shards]
    count = max(counts | {len(shards)})
    if len(counts) != 1 or indexes != list(range(count)):
        absent = sorted(set(range(count)) - set(indexes))
        what = (
            f"shard {', '.join(str(i) for i in absent[:_SHOWN])} of {count} is missing"
            if absent
            else "its shards disagree on how many there are"
        )
        raise _fail(folder, f"the {chosen} split is sharded, and {what}")
    return [path for path, _ in shards]


def open_folder(folder: Path) -> RowFile:
    """A folder saved by `datasets` (a Dataset or a DatasetDict) or holding Parquet shards,
    ready to be read row by row; DatasetError saying what it holds and what is accepted for
    any other folder."""
    if (folder / DATASET_DICT).is_file():
        return _row_file(folder, _saved_shards(_dataset_dict_split(folder)), "arrow")
    if (folder / STATE).is_file():
        return _row_file(folder, _saved_shards(folder), "arrow")
    try:
        entries = sorted(folder.iterdir(), key=_natural)
        shards = parquet_shards(folder)
    except OSError as err:
        raise DatasetError(f"cannot read the folder {folder}: {err.strerror or err}") from None
    if shards:
        return _row_file(folder, shards, "parquet")
    holds = f"it holds {_names(entries)}" if entries else "it is empty"
    raise DatasetError(
        f"{folder} is a folder, not a dataset file, and no dataset saved by datasets"
        f" ({holds}); open {ACCEPTED}"
    )
