"""Dataset use cases: check a dataset the way Start will read it, and turn docs into one.

:meth:`DataDesk.check` is both the Finetune form's Check and `sage-tui data check`: the
file's format, the rows kept and refused, then the rows through the base model's tokenizer and
chat template (token lengths against the max length, the share of tokens that carry loss, the
first row with them marked). :meth:`DataDesk.from_docs` is "Use the docs" (SAGE's 使用 SAGE
文档) and `sage-tui data from-docs`. :class:`JobDesk.prepare` runs the same check, so Start
refuses exactly what the Check refuses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sage_tui.core.data import DatasetError, LoadedDataset, load_dataset_file
from sage_tui.core.data.placeholders import is_placeholder_warning
from sage_tui.core.models.registry import remote_code_allowed
from sage_tui.errors import SageError, describe_error
from sage_tui.studio.docs_questions import DocsResult, write_docs_dataset

if TYPE_CHECKING:
    from sage_tui.core.data.preview import Preview
    from sage_tui.core.store import ModelRecord
    from sage_tui.services import Services
    from sage_tui.studio.engine import EngineDesk
    from sage_tui.studio.jobs import JobRequest

CHECK_KEEP = 5000
"""Examples a dataset check holds in memory (for the token preview); the figures and
problems cover every row whatever the file's size."""

DEFAULT_MAX_LENGTH = 1024


@dataclass(frozen=True)
class DatasetCheck:
    """What reading a dataset found, and what Start will do with the file."""

    loaded: LoadedDataset
    """The rows read with invalid ones set aside (so the figures cover the whole file); its
    `examples` are the first CHECK_KEEP."""
    skip_invalid: bool
    unfilled: dict[str, int]
    """`{{name}}` placeholders left unfilled, with the rows holding each."""

    @property
    def refused(self) -> bool:
        """True when Start would refuse the file (invalid rows, not skipping them)."""
        return bool(self.loaded.skipped) and not self.skip_invalid

    @property
    def verdict(self) -> str:
        """One line: what Start will do with this file."""
        loaded = self.loaded
        if not loaded.skipped:
            return f"all {loaded.total_rows} rows are valid ({loaded.format.value})"
        if self.skip_invalid:
            return (
                f"{loaded.skipped} invalid rows of {loaded.total_rows} will be skipped:"
                f" training on {loaded.usable}"
            )
        return (
            f"{loaded.skipped} of {loaded.total_rows} rows are invalid: Start refuses this file;"
            " fix them, or skip invalid rows"
        )

    def warnings(self, how_to_fill: Callable[[list[str]], str] | None = None) -> list[str]:
        """The dataset's warnings; the placeholder one ends with how to fill them, in the
        front end's words (`how_to_fill(names)`, e.g. "pass --fill name=VALUE")."""
        lines = []
        for warning in self.loaded.warnings:
            if self.unfilled and how_to_fill and is_placeholder_warning(warning):
                warning += f" ({how_to_fill(list(self.unfilled))})"
            lines.append(warning)
        return lines


def resolved_dataset(source: str | Path) -> Path:
    """The dataset a user named: a file or folder, or a dataset id in the local Hugging Face
    cache; DatasetError when it is none of them."""
    from sage_tui.core.data.sources import resolve_dataset

    return resolve_dataset(str(source)).expanduser().absolute()


def check_dataset(
    path: str | Path,
    *,
    fmt: str | None = None,
    skip_invalid: bool = False,
    placeholders: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
) -> DatasetCheck:
    """Read every row of a dataset (streaming it); DatasetError when it cannot be used at all.

    Invalid rows are always read past, so the check reports on the whole file; whether Start
    accepts them is `skip_invalid`, the same value Start will use.
    """
    loaded = load_dataset_file(
        resolved_dataset(path),
        fmt=fmt,
        skip_invalid=True,
        placeholders=dict(placeholders or {}),
        keep=CHECK_KEEP,
        columns=dict(columns or {}) or None,
    )
    return DatasetCheck(loaded, skip_invalid, loaded.unfilled)


@dataclass(frozen=True)
class DataReport:
    """A dataset check as a user reads it: the verdict first, the reason on the last line."""

    check: DatasetCheck | None
    """None when the file cannot be read at all (`error` says why)."""
    preview: Preview | None = None
    error: str | None = None
    """Why the file cannot train (unreadable, no usable row, the chat template refuses it)."""
    preview_error: str | None = None
    """Why there are no token figures (the tokenizer could not load): the file may still train."""
    how_to_fill: Callable[[list[str]], str] | None = field(default=None, compare=False)

    @property
    def path(self) -> Path | None:
        """The dataset read (an id resolved to its file)."""
        return self.check.loaded.path if self.check else None

    @property
    def refused(self) -> bool:
        """True when Start would refuse this dataset."""
        return self.error is not None or self.check is None or self.check.refused

    @property
    def unfilled(self) -> list[str]:
        """Placeholder names left unfilled."""
        return list(self.check.unfilled) if self.check else []

    @property
    def pieces(self) -> list[tuple[str, bool]]:
        """The first row's tokens as (text, carries loss) pieces; empty without a preview."""
        return list(self.preview.pieces) if self.preview is not None else []

    @property
    def reason(self) -> str:
        """One line: whether the file can train, and why not."""
        if self.error is not None:
            return f"cannot train: {self.error}"
        assert self.check is not None
        if self.check.refused:
            return f"cannot train: {self.check.verdict}"
        return f"can train: {self.check.loaded.usable} rows"

    @property
    def text(self) -> str:
        """The whole report, plain text (it quotes the file: show it as data)."""
        from sage_tui.studio.dataset_report import describe_report

        return describe_report(self)


class DataDesk:
    """Checking datasets and writing them from docs, for every front end."""

    def __init__(self, services: Services, engine: EngineDesk | None = None) -> None:
        self.services = services
        self.engine = engine
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- checking ---------------------------------------------------------------------------

    def base_for_check(self, name: str | None) -> ModelRecord:
        """The base model whose tokenizer a check uses: `name` (an adapter means its base),
        else the active model's base, else the default model (provisioned if missing)."""
        registry = self.services.registry
        if not name:
            name = registry.active_name
        if not name:
            default = self.services.settings.default_model
            if not registry.builtin_ready(default):
                registry.pull(default, progress=lambda line: None)
            name = default
        return registry.base_of(registry.get(name))

    def tokenizer(self, base: ModelRecord) -> Any:
        """The base model's tokenizer, loaded once per model. Blocks (imports transformers)."""
        with self._lock:
            if base.path not in self._tokenizers:
                from transformers import AutoTokenizer

                self._tokenizers[base.path] = AutoTokenizer.from_pretrained(
                    base.path, trust_remote_code=remote_code_allowed(base)
                )
            return self._tokenizers[base.path]

    def check(
        self,
        request: JobRequest,
        max_length: int | None = None,
        *,
        how_to_fill: Callable[[list[str]], str] | None = None,
    ) -> DataReport:
        """Check `request`'s dataset as Start will use it. Blocks (reads the whole file,
        loads the tokenizer); never raises for a bad file: the report says why."""
        if max_length is None:
            max_length = int(request.settings.get("max_length") or DEFAULT_MAX_LENGTH)
        try:
            check = check_dataset(
                request.dataset,
                fmt=request.dataset_format,
                skip_invalid=request.skip_invalid,
                placeholders=request.placeholders,
                columns=request.columns,
            )
        except SageError as err:
            return DataReport(None, error=str(err), how_to_fill=how_to_fill)
        try:
            base = self.base_for_check(request.base)
            tokenizer = self.tokenizer(base)
        except Exception as err:  # a missing or broken tokenizer costs only the figures
            return DataReport(check, preview_error=describe_error(err), how_to_fill=how_to_fill)
        from sage_tui.core.data.preview import preview

        try:
            shown = preview(
                check.loaded,
                tokenizer,
                max_length,
                train_on_prompts=request.train_on_prompts,
                strip_special_tokens=request.strip_special_tokens,
            )
        except DatasetError as err:  # the chat template refuses the rows
            return DataReport(check, error=str(err), how_to_fill=how_to_fill)
        error = None
        if shown.count and shown.dropped == shown.count:
            error = (
                f"every row's reply starts after the max length ({max_length} tokens):"
                " raise the max length"
            )
        return DataReport(check, shown, error=error, how_to_fill=how_to_fill)

    # -- docs -------------------------------------------------------------------------------

    def docs_output(self, folder: Path) -> Path:
        """Where "Use the docs" writes the dataset for `folder`: the home's datasets folder."""
        name = folder.expanduser().absolute().name or "docs"
        return self.services.settings.paths.home / "datasets" / f"docs-{name}.jsonl"

    async def from_docs(
        self,
        folder: str | Path,
        *,
        output: str | Path | None = None,
        model_questions: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> DocsResult:
        """Turn a folder of Markdown docs into a chat dataset (one example per section) and
        write it as JSON lines to `output` (default :meth:`docs_output`).

        With `model_questions`, the loaded model writes up to three varied questions for each
        section; a section it writes none for keeps the templated question, and if the engine
        fails every remaining section does.
        """
        folder = Path(folder).expanduser()
        target = Path(output).expanduser() if output else self.docs_output(folder)
        ask = None
        if model_questions:
            if self.engine is None:
                raise SageError("no engine to write questions with")
            ask = self.engine.reply
        return await write_docs_dataset(folder, target, ask, progress or (lambda line: None))


__all__ = [
    "CHECK_KEEP",
    "DataDesk",
    "DataReport",
    "DatasetCheck",
    "DocsResult",
    "check_dataset",
    "resolved_dataset",
]
