"""Fine-tuning datasets in the formats people bring, turned into chat examples.

The entry point for dataset files: `load_dataset_file` reads a file (`dataset_files`: JSON
lines, a JSON array or CSV, each row with its line), detects or takes its format and converts
every row to an `Example` (`dataset_formats`: messages, sharegpt, alpaca, prompt_completion,
text), and fills `{{name}}` placeholders from the values given (`dataset_placeholders`),
warning about any left. A bad row is reported with its line and the reason; by default any bad
row refuses the file, so nobody trains on half a dataset without noticing. `split` and
`write_jsonl` save train/eval files; `dataset_preview` renders examples through the model's
chat template and measures them.

Nothing heavy is imported here: the tokenizer is handed in by the caller.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sage_tui.core.atomic import write_atomic
from sage_tui.core.data.files import SUPPORTED_EXTENSIONS, read_rows
from sage_tui.core.data.formats import (
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
from sage_tui.core.data.placeholders import (
    fill_placeholders,
    find_placeholders,
    is_placeholder_warning,
    placeholder_warning,
)

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
    "invalid_rows_message",
    "load_dataset_file",
    "parse_format",
    "split",
    "to_example",
    "to_messages",
    "write_jsonl",
]

_SHOWN_PROBLEMS = 5


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
        kept = [w for w in self.warnings if not is_placeholder_warning(w)]
        warning = placeholder_warning(str(self.path), examples)
        return replace(self, examples=examples, warnings=kept + ([warning] if warning else []))


# ---------------------------------------------------------------------------------------------
# Loading


def _problem_list(problems: Sequence[RowProblem]) -> str:
    shown = "; ".join(str(p) for p in problems[:_SHOWN_PROBLEMS])
    if len(problems) > _SHOWN_PROBLEMS:
        shown += f"; and {len(problems) - _SHOWN_PROBLEMS} more"
    return shown


def invalid_rows_message(source: str, problems: Sequence[RowProblem], total: int) -> str:
    """Why a file with invalid rows is refused: how many, the first few, and the way out."""
    return (
        f"{source}: {len(problems)} of {total} rows are invalid"
        f" ({_problem_list(problems)}); fix them, or skip invalid rows (--skip-invalid)"
    )


def load_dataset_file(
    path: str | os.PathLike[str],
    *,
    fmt: str | Format | None = None,
    skip_invalid: bool = False,
    placeholders: Mapping[str, str] | None = None,
) -> LoadedDataset:
    """Read, validate and convert a dataset file.

    `fmt` names the format (detected from the rows when None). Any invalid row raises
    DatasetError listing the first few as `line N: reason`, unless `skip_invalid`, which keeps
    the valid rows and records the rest in `problems`. No valid row at all always raises.
    `placeholders` fills `{{name}}` in the examples; the warning names only those left.
    """
    path = Path(path)
    source = str(path)
    rows, in_array = read_rows(path)
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
        raise DatasetError(invalid_rows_message(source, problems, len(rows)))
    if placeholders:
        examples = fill_placeholders(examples, placeholders)
    warning = placeholder_warning(source, examples)
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
    count = 0

    def lines() -> Iterable[str]:
        nonlocal count
        for example in examples:
            count += 1
            yield json.dumps(example.record(), ensure_ascii=False) + "\n"

    write_atomic(path, lines())
    return count
