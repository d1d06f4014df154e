"""Fine-tuning datasets in the formats people bring, turned into chat examples.

The entry point for dataset files: `load_dataset_file` reads a file (`files`: JSON lines, a
JSON array, CSV or Parquet, each row with its line or number), renames its columns when a
mapping is given (`columns`), refuses rows that are not supervised chat data (`kinds`:
preference pairs, KTO labels, rankings, multimodal rows; in the first rows that refuses the
whole file), detects or takes its format and converts every row to an `Example` (`formats`
and `chat`: messages, sharegpt, alpaca, prompt_completion, text), and fills `{{name}}`
placeholders from the values given (`placeholders`), warning about any left and about exact
duplicate rows (`duplicates`). A bad row is reported with its line and the reason; by default
any bad row refuses the file, so nobody trains on half a dataset without noticing. `split`
and `write_jsonl` (`splits`) save train/eval files; `preview` renders examples through the
model's chat template and measures them.

The file is read in one streaming pass: `keep` bounds the examples held in memory (a check of
a multi-gigabyte file keeps the first few thousand and counts the rest), `iter_examples`
reads the usable examples again one at a time, and `held_out` decides the train/eval split
by position without a list of the examples.

Nothing heavy is imported here: the tokenizer is handed in by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path

from sage_tui.core.data.columns import (
    check_columns,
    parse_columns,
    rename_columns,
    unmatched_columns,
)
from sage_tui.core.data.duplicates import DuplicateCounter
from sage_tui.core.data.files import SUPPORTED_EXTENSIONS, Row, RowFile, open_rows
from sage_tui.core.data.formats import (
    DETECT_ROWS,
    FORMATS,
    ROLES,
    DatasetError,
    Example,
    Format,
    InvalidRow,
    Message,
    detect_format,
    parse_format,
    to_example,
    to_messages,
)
from sage_tui.core.data.kinds import refused_kind
from sage_tui.core.data.placeholders import (
    PlaceholderTally,
    fill_example,
    fill_placeholders,
    find_placeholders,
    is_placeholder_warning,
)
from sage_tui.core.data.splits import held_out, split, write_jsonl

__all__ = [
    "FORMATS",
    "ROLES",
    "SUPPORTED_EXTENSIONS",
    "DatasetError",
    "Example",
    "Format",
    "InvalidRow",
    "LoadedDataset",
    "Message",
    "RowProblem",
    "detect_format",
    "fill_placeholders",
    "find_placeholders",
    "held_out",
    "invalid_rows_message",
    "iter_examples",
    "load_dataset_file",
    "parse_columns",
    "parse_format",
    "split",
    "to_example",
    "to_messages",
    "write_jsonl",
]

_SHOWN_PROBLEMS = 5
KEPT_PROBLEMS = 1000
"""Invalid rows described in `LoadedDataset.problems`; the rest are only counted."""


@dataclass(frozen=True)
class RowProblem:
    """Why one row was refused."""

    line: int  # 1-based line where the row starts
    row_index: int  # 0-based position among the file's rows
    message: str
    in_array: bool = False  # rows of a JSON array are also shown by number
    unit: str = "line"
    """What `line` counts: "line", or "row" for files without lines (Parquet, Arrow)."""

    def __str__(self) -> str:
        where = f"{self.unit} {self.line}"
        if self.in_array and self.unit == "line":
            where += f" (row {self.row_index + 1})"
        return f"{where}: {self.message}"


@dataclass
class LoadedDataset:
    """A dataset file read, validated and converted.

    `examples` holds every usable example, or only the first ones when loaded with `keep`;
    `usable` counts them all. `problems` describes the first KEPT_PROBLEMS invalid rows,
    `skipped` counts them all.
    """

    path: Path
    format: Format
    examples: list[Example]
    problems: list[RowProblem] = field(default_factory=list)
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    usable: int = -1
    """Usable examples in the file; -1 (when built by hand): len(examples)."""
    unfilled: dict[str, int] = field(default_factory=dict)
    """`{{name}}` placeholders left unfilled, with the number of usable rows holding each."""
    duplicates: int = 0
    """Usable rows that repeat an earlier row exactly (as converted)."""

    def __post_init__(self) -> None:
        if self.usable < 0:
            self.usable = len(self.examples)

    @property
    def total_rows(self) -> int:
        """Rows in the file, kept and skipped."""
        return self.usable + self.skipped

    @property
    def is_text(self) -> bool:
        """True when the examples are plain text (continued pre-training)."""
        return self.format is Format.TEXT

    def fill_placeholders(self, values: Mapping[str, str]) -> LoadedDataset:
        """A copy with `{{name}}` placeholders filled from `values`, warnings recomputed (from
        the examples held: load with `placeholders` instead when only some are kept)."""
        examples = fill_placeholders(self.examples, values)
        tally = PlaceholderTally()
        for example in examples:
            tally.add(example)
        kept = [w for w in self.warnings if not is_placeholder_warning(w)]
        warning = tally.warning(str(self.path))
        return replace(
            self,
            examples=examples,
            warnings=kept + ([warning] if warning else []),
            unfilled=tally.found(),
        )


# ---------------------------------------------------------------------------------------------
# Loading


def _problem_list(problems: Sequence[RowProblem], count: int) -> str:
    shown = "; ".join(str(p) for p in problems[:_SHOWN_PROBLEMS])
    if count > _SHOWN_PROBLEMS:
        shown += f"; and {count - _SHOWN_PROBLEMS} more"
    return shown


def invalid_rows_message(
    source: str, problems: Sequence[RowProblem], total: int, count: int | None = None
) -> str:
    """Why a file with invalid rows is refused: how many (`count`, default all `problems`),
    the first few, and the way out."""
    count = len(problems) if count is None else count
    return (
        f"{source}: {count} of {total} rows are invalid"
        f" ({_problem_list(problems, count)}); fix them, or skip invalid rows (--skip-invalid)"
    )


_JQ_READS = (".json", ".jsonl")


def _is_csv(rows: RowFile) -> bool:
    return rows.path.suffix.lower() == ".csv"


def _unit(rows: RowFile) -> str:
    return getattr(rows, "unit", "line")


def _renamed(rows: Iterable[Row], columns: Mapping[str, str], cells: bool) -> Iterator[Row]:
    if not columns:
        yield from rows
        return
    for row in rows:
        if row.error is None and isinstance(row.value, dict):
            row = replace(row, value=rename_columns(row.value, columns, cells=cells))
        yield row


def _detected(
    rows: RowFile, fmt: str | Format | None, columns: Mapping[str, str]
) -> tuple[Format, Iterator[Row]]:
    """The format (`fmt`, or detected from the first rows) and all the rows, in order, their
    columns renamed by `columns`."""
    source = str(rows.path)
    stream = iter(rows)
    head: list[Row] = []
    objects = 0
    for row in stream:
        head.append(row)
        objects += row.error is None and isinstance(row.value, dict)
        if objects >= DETECT_ROWS:
            break
    if not head:
        raise DatasetError(f"{source} has no rows")
    values = [r.value for r in head if r.error is None]
    missing = unmatched_columns(values, columns)
    if missing:
        keys = sorted({str(k) for v in values if isinstance(v, dict) for k in v})
        found = ", ".join(keys[:12]) + (f" and {len(keys) - 12} more" if len(keys) > 12 else "")
        raise DatasetError(
            f"{source}: the column mapping {', '.join(missing)} found nothing: no column of"
            f" that name in the first {objects} rows (columns found: {found or 'none'})"
        )
    cells = _is_csv(rows)
    head = list(_renamed(head, columns, cells))
    for row in head:
        kind = refused_kind(row.value) if row.error is None else None
        if kind is not None:
            where = f"{_unit(rows)} {row.line}"
            # jq reads JSON and JSON lines only.
            name = rows.path.name if rows.path.suffix.lower() in _JQ_READS else None
            message = kind.file_message(source, where, name, rows.in_array)
            raise DatasetError(message)
    if fmt is not None:
        chosen = parse_format(fmt)
    else:
        chosen = detect_format([r.value for r in head if r.error is None], source=source)
    return chosen, chain(head, _renamed(stream, columns, cells))


def _converted(
    rows: Iterable[Row], fmt: Format, placeholders: Mapping[str, str] | None
) -> Iterator[tuple[Row, Example | str]]:
    """Each row with its example (placeholders filled), or the reason it is invalid."""
    for row in rows:
        if row.error is not None:
            yield row, row.error
            continue
        try:
            example = to_example(row.value, fmt, line=row.line)
        except InvalidRow as err:
            yield row, str(err)
            continue
        yield row, fill_example(example, placeholders) if placeholders else example


def load_dataset_file(
    path: str | os.PathLike[str],
    *,
    fmt: str | Format | None = None,
    skip_invalid: bool = False,
    placeholders: Mapping[str, str] | None = None,
    keep: int | None = None,
    columns: Mapping[str, str] | None = None,
) -> LoadedDataset:
    """Read, validate and convert a dataset file, streaming it.

    `fmt` names the format (detected from the rows when None). Any invalid row raises
    DatasetError listing the first few as `line N: reason`, unless `skip_invalid`, which keeps
    the valid rows and records the rest in `problems`. No valid row at all always raises.
    `placeholders` fills `{{name}}` in the examples; the warning names only those left.
    `keep` holds only the first `keep` examples in memory (None: all of them); the counts,
    problems and warnings cover the whole file either way.
    `columns` maps standard key names to the file's own (`{"output": "answer"}`, see
    `columns.parse_columns`); each row's keys are renamed before anything else reads them.
    """
    path = Path(path)
    source = str(path)
    mapping = check_columns(columns or {})
    rows = open_rows(path)
    unit = _unit(rows)
    chosen, stream = _detected(rows, fmt, mapping)
    examples: list[Example] = []
    problems: list[RowProblem] = []
    invalid = 0
    tally = PlaceholderTally()
    repeats = DuplicateCounter()
    for row, result in _converted(stream, chosen, placeholders):
        if isinstance(result, Example):
            tally.add(result)
            repeats.add(result.record(), row.line)
            if keep is None or len(examples) < keep:
                examples.append(result)
            continue
        invalid += 1
        if len(problems) < KEPT_PROBLEMS:
            problems.append(RowProblem(row.line, row.index, result, rows.in_array, unit))
    if not tally.rows and not invalid:
        raise DatasetError(f"{source} has no rows")
    if not tally.rows:
        raise DatasetError(
            f"{source}: all {invalid} rows are invalid as {chosen.value}"
            f" ({_problem_list(problems, invalid)})"
        )
    if invalid and not skip_invalid:
        raise DatasetError(invalid_rows_message(source, problems, invalid + tally.rows, invalid))
    warnings = [tally.warning(source), repeats.warning(source, unit)]
    return LoadedDataset(
        path=path,
        format=chosen,
        examples=examples,
        problems=problems,
        skipped=invalid,
        warnings=[warning for warning in warnings if warning],
        usable=tally.rows,
        unfilled=tally.found(),
        duplicates=repeats.count,
    )


def iter_examples(
    path: str | os.PathLike[str],
    fmt: str | Format,
    *,
    placeholders: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
) -> Iterator[Example]:
    """The usable examples of a dataset file, one at a time, in order (invalid rows are left
    out: check the file with `load_dataset_file` first, with the same `columns`)."""
    opened = open_rows(Path(path))
    rows = _renamed(opened, check_columns(columns or {}), _is_csv(opened))
    for _, result in _converted(rows, parse_format(fmt), placeholders):
        if isinstance(result, Example):
            yield result
