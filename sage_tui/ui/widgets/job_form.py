"""The fine-tuning job form: base model, dataset (with its Check), preset and LoRA settings.

The form holds what the user typed and nothing else: it posts `CheckRequested`,
`DocsRequested` and `StartRequested`, and the Finetune screen calls the studio. Browse opens
the file picker itself (it only helps type the dataset's path: no service is called).
`build_request()` turns the form into a `JobRequest` carrying only the values the user changed
from what the form showed, so the studio applies the preset and its rules exactly as it does
for the CLI."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Button, Checkbox, Input, Label, Select

from sage_tui.core.data import SUPPORTED_EXTENSIONS
from sage_tui.core.data.columns import parse_columns
from sage_tui.core.gpu import ResourceSnapshot
from sage_tui.core.store import ModelRecord
from sage_tui.core.training.spec import PRESETS, JobSpec, SpecError, preset_for
from sage_tui.errors import SageError
from sage_tui.studio import EngineState, EngineStatus
from sage_tui.studio.jobs import JobRequest
from sage_tui.ui.modals.file_picker import (
    DOCS_EXTENSIONS,
    FilePickerModal,
    shown_path,
    start_folder,
)
from sage_tui.ui.plain_text import plain
from sage_tui.ui.widgets.token_preview import DatasetReport

NUMBER_FIELDS = (
    # (spec field, widget id, label, type)
    ("lora_r", "finetune-rank", "rank", int),
    ("lora_alpha", "finetune-alpha", "alpha", int),
    ("learning_rate", "finetune-lr", "learning rate", float),
    ("epochs", "finetune-epochs", "epochs", float),
    ("max_steps", "finetune-max-steps", "max steps", int),
    ("batch_size", "finetune-batch", "batch size", int),
    ("grad_accum", "finetune-grad-accum", "grad accum", int),
    ("max_length", "finetune-max-length", "max length", int),
    ("eval_fraction", "finetune-eval", "eval fraction", float),
)
DEFAULTS = JobSpec(task_id="x", base_model="", base_path="", dataset="")
PROBE_SEPARATOR = " | "
"""Between the probe prompts typed in the form's one line."""
RECHECK = ("#finetune-skip-invalid", "#finetune-train-on-prompts", "#finetune-strip-special")
"""Checkboxes that change what Start does with the rows: changing one checks again."""
MEMORY_INPUTS = ",".join(
    f"#{widget}"
    for widget in ("finetune-rank", "finetune-batch", "finetune-max-length", "finetune-gpus")
)
"""Fields the memory estimate follows (with the base model and the preset)."""
MEMORY_DEBOUNCE_SECONDS = 0.3


def _show_number(value: float) -> str:
    return f"{value:g}"


def probe_prompts(text: str) -> tuple[str, ...]:
    """The probe prompts typed in one line, split at " | " (empty ones dropped)."""
    return tuple(part.strip() for part in text.split(PROBE_SEPARATOR) if part.strip())


class JobForm(VerticalScroll):
    """What a new fine-tuning job needs; `build_request()` turns it into a JobRequest."""

    BINDINGS = [Binding("ctrl+o", "browse", "Browse", id="finetune.browse")]

    @dataclass
    class CheckRequested(Message):
        """The user asked to check the dataset with the form's current settings."""

        request: JobRequest
        max_length: int
        """Tokens per row the job would keep (for the length histogram)."""

    @dataclass
    class StartRequested(Message):
        """The user asked to start the job the form describes."""

    @dataclass
    class MemoryRequested(Message):
        """Estimate the memory of the job the form describes (its settings changed)."""

        request: JobRequest

    @dataclass
    class DocsRequested(Message):
        """The user picked a folder of Markdown docs to turn into a dataset."""

        folder: Path
        model_questions: bool
        """Let the loaded model write the questions (templated ones otherwise)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bases: dict[str, ModelRecord] = {}
        """Registered base models by name, as the screen last gave them."""
        self._shown = {name: getattr(DEFAULTS, name) for name, *_ in NUMBER_FIELDS}
        """The number each field was last filled with (a default or the preset's)."""
        self._preset_from_hardware = False
        self._checked_columns = ""
        self._memory_timer: Timer | None = None
        """The columns text the last Check ran with (a blur re-checks only a change)."""

    def compose(self) -> ComposeResult:
        yield Label("base model", classes="finetune-label")
        yield Select([], prompt="base model", id="finetune-base", compact=True)
        kinds = " ".join(SUPPORTED_EXTENSIONS)
        yield Label(f"dataset ({kinds}, or a folder)", classes="finetune-label", markup=False)
        with Horizontal(id="finetune-dataset-row"):
            yield Input(placeholder="path/to/data.jsonl", id="finetune-dataset", compact=True)
            yield Button("Browse", id="finetune-browse", compact=True)
            yield Button("Check", id="finetune-check", compact=True)
        with Horizontal(id="finetune-columns-row"):
            yield Label("columns", classes="finetune-field-label")
            yield Input(
                placeholder="instruction=question,output=answer",
                id="finetune-columns",
                compact=True,
            )
        yield Checkbox("skip invalid rows", id="finetune-skip-invalid", compact=True)
        yield Checkbox("train on prompts too", id="finetune-train-on-prompts", compact=True)
        yield Checkbox("strip special tokens", id="finetune-strip-special", compact=True)
        with Horizontal(id="finetune-docs-row"):
            yield Button("Use the docs", id="finetune-docs", compact=True)
            yield Checkbox("questions written by the model", id="finetune-docs-model", compact=True)
        yield DatasetReport("Check reads the rows and counts tokens.", id="finetune-dataset-report")
        yield Grid(id="finetune-fills")
        yield Label("preset", classes="finetune-label")
        yield Select(
            [(f"{p.name}: {p.description}", p.name) for p in PRESETS.values()],
            allow_blank=False,
            value="cpu",
            id="finetune-preset",
            compact=True,
        )
        with Grid(id="finetune-fields"):
            yield Label("task id", classes="finetune-field-label")
            # Named at start when left empty, so the form shows no clock.
            yield Input(placeholder="ft-<date>-<time>", id="finetune-task", compact=True)
            for name, widget_id, label, _ in NUMBER_FIELDS:
                yield Label(label, classes="finetune-field-label")
                yield Input(_show_number(self._shown[name]), id=widget_id, compact=True)
            yield Label("GPUs", classes="finetune-field-label")
            yield Input(placeholder="any", id="finetune-gpus", compact=True)
        with Horizontal(id="finetune-probes-row"):
            yield Label("probes", classes="finetune-field-label")
            yield Input(
                placeholder="prompt 1 | prompt 2 (at each checkpoint)",
                id="finetune-probe-prompts",
                compact=True,
            )
        yield Label(
            "probes slow training on CPU: each checkpoint answers them all",
            id="finetune-probes-hint",
        )
        yield Label("memory: -", id="finetune-memory", markup=False)
        yield Button("Start  ctrl+s", variant="primary", id="finetune-start")

    def on_mount(self) -> None:
        self.watch(self.app, "resources", self._resources_seen)
        self.watch(self.app, "engine", self._engine_seen)

    def _engine_seen(self, status: EngineStatus) -> None:
        # The model can write the docs' questions only while an engine is loaded.
        self.query_one("#finetune-docs-model", Checkbox).display = status.state is EngineState.READY

    # -- base models and presets ------------------------------------------------------------

    def set_bases(self, bases: list[ModelRecord], preferred: str | None) -> None:
        """Offer these base models; keep the choice, else take `preferred`, else the first."""
        self.bases = {m.name: m for m in bases}
        select = self.query_one("#finetune-base", Select)
        current = select.value
        select.set_options([(plain(m.name), m.name) for m in bases])
        if current in self.bases:
            select.value = current
        elif preferred in self.bases:
            select.value = preferred
        elif bases:
            select.value = bases[0].name

    def _resources_seen(self, snapshot: ResourceSnapshot | None) -> None:
        # The preset follows the hardware once, at the first sample; after that it is the user's.
        if snapshot is None or self._preset_from_hardware:
            return
        self.query_one("#finetune-probes-hint").display = not snapshot.gpus
        self._preset_from_hardware = True
        preset = preset_for([gpu.memory_free for gpu in snapshot.gpus])
        select = self.query_one("#finetune-preset", Select)
        if select.value == preset.name:
            self._apply_preset(preset.name)
        else:
            select.value = preset.name

    @on(Select.Changed, "#finetune-preset")
    def _preset_chosen(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self._apply_preset(event.value)

    def _apply_preset(self, name: str) -> None:
        values = PRESETS[name].values
        for field, widget_id, _, _ in NUMBER_FIELDS:
            if field in values:
                self._shown[field] = values[field]
                self.query_one(f"#{widget_id}", Input).value = _show_number(values[field])

    # -- its memory -------------------------------------------------------------------------

    @on(Select.Changed, "#finetune-base")
    @on(Select.Changed, "#finetune-preset")
    @on(Input.Changed, MEMORY_INPUTS)
    def _memory_setting_changed(self) -> None:
        # Typing a number changes it per key: ask once the typing pauses.
        if self._memory_timer is not None:
            self._memory_timer.stop()
        self._memory_timer = self.set_timer(MEMORY_DEBOUNCE_SECONDS, self._request_memory)

    def _request_memory(self) -> None:
        self._memory_timer = None
        try:
            request = self.build_request()
        except SpecError:
            return  # a field that is not a number yet: the last line stands
        if request.base:
            self.post_message(self.MemoryRequested(request))

    def show_memory(self, line: str) -> None:
        """Show the estimate line ("memory: ~N GiB (...) · GPU 0 has x GiB free"), as text."""
        self.query_one("#finetune-memory", Label).update(plain(line))

    # -- the job it describes ---------------------------------------------------------------

    def build_request(self) -> JobRequest:
        """The job the form describes; SpecError for a field that is not a number."""
        base = self.query_one("#finetune-base", Select).value
        settings: dict[str, Any] = {}
        for field, widget_id, label, kind in NUMBER_FIELDS:
            text = self.query_one(f"#{widget_id}", Input).value.strip()
            try:
                value = kind(text)
            except ValueError:
                raise SpecError(f"{label}: {text!r} is not a number") from None
            if value != self._shown[field]:
                settings[field] = value
        if probes := probe_prompts(self.query_one("#finetune-probe-prompts", Input).value):
            settings["probes"] = probes
        preset = self.query_one("#finetune-preset", Select).value
        columns_text = self.query_one("#finetune-columns", Input).value
        try:
            columns = parse_columns(columns_text)
        except SageError as err:  # the mapping's own words say which entry is wrong
            raise SpecError(str(err)) from None
        return JobRequest(
            base=base if isinstance(base, str) else "",
            dataset=self.query_one("#finetune-dataset", Input).value.strip(),
            task_id=self.query_one("#finetune-task", Input).value,
            preset=preset if isinstance(preset, str) else None,
            settings=settings,
            gpus=self.query_one("#finetune-gpus", Input).value,
            placeholders=self.placeholder_values(),
            skip_invalid=self.query_one("#finetune-skip-invalid", Checkbox).value,
            columns=columns,
            train_on_prompts=self.query_one("#finetune-train-on-prompts", Checkbox).value,
            strip_special_tokens=self.query_one("#finetune-strip-special", Checkbox).value,
        )

    def clear_task_id(self) -> None:
        """Empty the task id after a start: the next job gets a fresh name unless one is typed."""
        self.query_one("#finetune-task", Input).value = ""

    @on(Button.Pressed, "#finetune-start")
    def _start_pressed(self) -> None:
        self.post_message(self.StartRequested())

    # -- the dataset check ------------------------------------------------------------------

    @on(Button.Pressed, "#finetune-check")
    @on(Input.Submitted, "#finetune-dataset")
    def _check_pressed(self) -> None:
        self.run_check()

    def run_check(self) -> None:
        """Check the dataset with the form's settings (the screen reads it in a worker)."""
        self._checked_columns = self.query_one("#finetune-columns", Input).value
        if not self.query_one("#finetune-dataset", Input).value.strip():
            self.show_report("Enter a dataset path first, or Browse for one.", failed=False)
            return
        try:
            request = self.build_request()
        except SpecError as err:
            self.show_report(str(err), failed=True)
            return
        self.show_report(f"checking {request.dataset} ...", failed=False)
        max_length = int(request.settings.get("max_length", self._shown["max_length"]))
        self.post_message(self.CheckRequested(request, max_length))

    @on(Checkbox.Changed, ",".join(RECHECK))
    def _recheck_setting_changed(self) -> None:
        # What Start will do with the rows changed: check again so the report says it.
        if self.query_one("#finetune-dataset", Input).value.strip():
            self.run_check()

    @on(Input.Submitted, "#finetune-columns")
    @on(Input.Blurred, "#finetune-columns")
    def _columns_changed(self, event: Input.Submitted | Input.Blurred) -> None:
        if event.value == self._checked_columns:
            return
        self._recheck_setting_changed()

    def use_dataset(self, path: Path) -> None:
        """Put `path` in the dataset box and check it."""
        self.query_one("#finetune-dataset", Input).value = shown_path(path)
        self.run_check()

    # -- picking files ------------------------------------------------------------------------

    @on(Button.Pressed, "#finetune-browse")
    async def action_browse(self) -> None:
        """Pick the dataset file (or saved folder) in the file picker; it is then checked."""
        typed = self.query_one("#finetune-dataset", Input).value
        start = await asyncio.to_thread(start_folder, typed)  # stats: off the event loop

        def picked(path: Path | None) -> None:
            if path is not None:
                self.use_dataset(path)

        self.app.push_screen(FilePickerModal(start), picked)

    @on(Button.Pressed, "#finetune-docs")
    def action_docs(self) -> None:
        """Pick a folder of Markdown docs; the screen turns it into a dataset."""
        model = self.query_one("#finetune-docs-model", Checkbox)

        def picked(folder: Path | None) -> None:
            if folder is not None:
                wanted = model.value and model.display
                self.post_message(self.DocsRequested(folder, model_questions=wanted))

        picker = FilePickerModal(
            Path.cwd(),
            title="Pick a folder of Markdown docs (use this folder: ctrl+f)",
            extensions=DOCS_EXTENSIONS,
            folders_only=True,
        )
        self.app.push_screen(picker, picked)

    def show_fills(self, names: list[str]) -> None:
        """One input for each `{{name}}` placeholder the dataset holds; typed values stay."""
        fills = self.query_one("#finetune-fills", Grid)
        kept = self.placeholder_values()
        fills.remove_children()
        for name in names:
            fills.mount(
                Label("{{" + name + "}}", classes="finetune-field-label", markup=False),
                Input(
                    kept.get(name, ""),
                    placeholder=f"value for {{{{{name}}}}}",
                    id=f"finetune-fill-{name}",
                    classes="finetune-fill",
                    compact=True,
                ),
            )
        fills.display = bool(names)

    def placeholder_values(self) -> dict[str, str]:
        """The values typed for the dataset's placeholders (empty ones left out)."""
        return {
            (widget.id or "").removeprefix("finetune-fill-"): widget.value.strip()
            for widget in self.query(".finetune-fill").results(Input)
            if widget.value.strip()
        }

    def show_report(
        self, text: str, failed: bool, pieces: list[tuple[str, bool]] | None = None
    ) -> None:
        """Show what the check found (plain text: it quotes the file) and the first row's
        tokens, those that carry loss highlighted."""
        self.query_one("#finetune-dataset-report", DatasetReport).show(text, failed, pieces or [])
