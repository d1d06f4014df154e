"""The fine-tuning job form: base model, dataset (with its Check), preset and LoRA settings.

The form holds what the user typed and nothing else: it posts `CheckRequested` and
`StartRequested`, and the Finetune screen calls the studio. `build_request()` turns the form
into a `JobRequest` carrying only the values the user changed from what the form showed, so the
studio applies the preset and its rules exactly as it does for the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from sage_tui.core.gpu import ResourceSnapshot
from sage_tui.core.store import ModelRecord
from sage_tui.core.training.spec import PRESETS, JobSpec, SpecError, preset_for
from sage_tui.studio.jobs import JobRequest
from sage_tui.ui.plain_text import plain

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


def _show_number(value: float) -> str:
    return f"{value:g}"


class JobForm(VerticalScroll):
    """What a new fine-tuning job needs; `build_request()` turns it into a JobRequest."""

    @dataclass
    class CheckRequested(Message):
        """The user asked to check the dataset with the form's current settings."""

        request: JobRequest
        max_length: int
        """Tokens per row the job would keep (for the length histogram)."""

    @dataclass
    class StartRequested(Message):
        """The user asked to start the job the form describes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bases: dict[str, ModelRecord] = {}
        """Registered base models by name, as the screen last gave them."""
        self._shown = {name: getattr(DEFAULTS, name) for name, *_ in NUMBER_FIELDS}
        """The number each field was last filled with (a default or the preset's)."""
        self._preset_from_hardware = False

    def compose(self) -> ComposeResult:
        yield Label("base model", classes="finetune-label")
        yield Select([], prompt="base model", id="finetune-base", compact=True)
        yield Label("dataset (.jsonl, .json, .csv)", classes="finetune-label")
        with Horizontal(id="finetune-dataset-row"):
            yield Input(placeholder="path/to/data.jsonl", id="finetune-dataset", compact=True)
            yield Button("Check", id="finetune-check", compact=True)
        yield Checkbox("skip invalid rows", id="finetune-skip-invalid", compact=True)
        yield Static(
            "Check reads the rows and counts tokens.",
            id="finetune-dataset-report",
            markup=False,
        )
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
        yield Button("Start  ctrl+s", variant="primary", id="finetune-start")

    def on_mount(self) -> None:
        self.watch(self.app, "resources", self._resources_seen)

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
        preset = self.query_one("#finetune-preset", Select).value
        return JobRequest(
            base=base if isinstance(base, str) else "",
            dataset=self.query_one("#finetune-dataset", Input).value.strip(),
            task_id=self.query_one("#finetune-task", Input).value,
            preset=preset if isinstance(preset, str) else None,
            settings=settings,
            gpus=self.query_one("#finetune-gpus", Input).value,
            placeholders=self.placeholder_values(),
            skip_invalid=self.query_one("#finetune-skip-invalid", Checkbox).value,
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
        if not self.query_one("#finetune-dataset", Input).value.strip():
            self.show_report("Enter a dataset path first.", failed=False)
            return
        try:
            request = self.build_request()
        except SpecError as err:
            self.show_report(str(err), failed=True)
            return
        self.show_report(f"checking {request.dataset} ...", failed=False)
        max_length = int(request.settings.get("max_length", self._shown["max_length"]))
        self.post_message(self.CheckRequested(request, max_length))

    @on(Checkbox.Changed, "#finetune-skip-invalid")
    def _skip_changed(self) -> None:
        # What Start will do with bad rows changed: check again so the report says it.
        if self.query_one("#finetune-dataset", Input).value.strip():
            self._check_pressed()

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

    def show_report(self, text: str, failed: bool) -> None:
        """Show what the check found (plain text: it quotes the file)."""
        report = self.query_one("#finetune-dataset-report", Static)
        report.set_class(failed, "-error")
        report.update(plain(text))
