"""The fine-tuning job form: base model, dataset (with its Check), preset and LoRA settings.

The form reads the registered base models and checks the dataset in its own workers; the
Finetune screen asks it for the job with `build_spec()` and submits that.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static
from textual.worker import Worker

from sage_tui.core.gpu import ResourceSnapshot
from sage_tui.core.store import ModelRecord
from sage_tui.core.training.placement import parse_gpus
from sage_tui.core.training.spec import PRESETS, JobSpec, SpecError, preset_for
from sage_tui.errors import SageError
from sage_tui.ui.workers import forward_worker_failure

SAMPLE_CHARS = 400
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


def default_task_id() -> str:
    """A new job's name: ft-<date>-<time>."""
    return time.strftime("ft-%Y%m%d-%H%M%S")


def _clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()} ... ({len(text) - limit} more characters)"


def _show_number(value: float) -> str:
    return f"{value:g}"


def describe_dataset(loaded: Any, preview: Any | None, preview_error: str | None) -> str:
    """What the Check found: rows, format, problems, then the token statistics."""
    lines = [
        f"{len(loaded.examples)} rows of {loaded.total_rows} usable, format {loaded.format.value}"
    ]
    lines += [f"problem: {problem}" for problem in loaded.problems[:5]]
    lines += [f"warning: {warning}" for warning in loaded.warnings]
    if preview is not None:
        lines.append(
            f"tokens: min {preview.min_tokens}  median {preview.median_tokens:.0f}"
            f"  max {preview.max_tokens}  ({preview.truncated} over max length"
            f" {preview.max_length})"
        )
        lines.append(preview.histogram_text(bins=6, width=24))
        if preview.samples:
            lines.append("first row as the model sees it:")
            lines.append(_clip(preview.samples[0], SAMPLE_CHARS))
    elif preview_error:
        lines.append(f"token preview unavailable: {preview_error}")
    return "\n".join(lines)


class JobForm(VerticalScroll):
    """What a new fine-tuning job needs; `build_spec()` turns it into a checked JobSpec."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bases: dict[str, ModelRecord] = {}
        """Registered base models by name, as last read."""
        self._preset_from_hardware = False

    def compose(self) -> ComposeResult:
        yield Label("base model", classes="finetune-label")
        yield Select([], prompt="base model", id="finetune-base", compact=True)
        yield Label("dataset (.jsonl, .json, .csv)", classes="finetune-label")
        with Horizontal(id="finetune-dataset-row"):
            yield Input(placeholder="path/to/data.jsonl", id="finetune-dataset", compact=True)
            yield Button("Check", id="finetune-check", compact=True)
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
                yield Input(_show_number(getattr(DEFAULTS, name)), id=widget_id, compact=True)
            yield Label("GPUs", classes="finetune-field-label")
            yield Input(placeholder="any", id="finetune-gpus", compact=True)
        yield Button("Start  ctrl+s", variant="primary", id="finetune-start")

    def on_mount(self) -> None:
        self.load_bases()
        self.watch(self.app, "resources", self._resources_seen)

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        forward_worker_failure(self, event)

    # -- base models and presets ------------------------------------------------------------

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="finetune-bases",
        description="read base models",
    )
    def load_bases(self) -> None:
        """Read the registered base models off the event loop."""
        registry = self.app.services.registry
        bases = [m for m in registry.list() if m.kind == "base"]
        active = registry.active_name
        preferred = None
        if active:
            try:
                preferred = registry.base_of(registry.get(active)).name
            except SageError:
                preferred = None
        self.app.call_from_thread(self._fill_bases, bases, preferred)

    def _fill_bases(self, bases: list[ModelRecord], preferred: str | None) -> None:
        self.bases = {m.name: m for m in bases}
        select = self.query_one("#finetune-base", Select)
        current = select.value
        select.set_options([(m.name, m.name) for m in bases])
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
        values = dict(PRESETS[name].values)
        if "lora_r" in values:
            values.setdefault("lora_alpha", 2 * values["lora_r"])
        for field, widget_id, _, _ in NUMBER_FIELDS:
            if field in values:
                self.query_one(f"#{widget_id}", Input).value = _show_number(values[field])

    # -- the dataset check ------------------------------------------------------------------

    @on(Button.Pressed, "#finetune-check")
    @on(Input.Submitted, "#finetune-dataset")
    def _check_pressed(self) -> None:
        path = self.query_one("#finetune-dataset", Input).value.strip()
        report = self.query_one("#finetune-dataset-report", Static)
        if not path:
            report.update("Enter a dataset path first.")
            return
        base = self.bases.get(self._base_name() or "")
        try:
            max_length = int(self.query_one("#finetune-max-length", Input).value)
        except ValueError:
            max_length = DEFAULTS.max_length
        report.update(f"checking {path} ...")
        self.check_dataset(Path(path).expanduser(), base.path if base else None, max_length)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="finetune-check",
        description="check the dataset",
    )
    def check_dataset(self, path: Path, base_path: str | None, max_length: int) -> None:
        """Load the dataset and count its tokens with the base model's tokenizer."""
        from sage_tui.core.data.preview import preview
        from sage_tui.core.data import find_placeholders, load_dataset_file

        try:
            loaded = load_dataset_file(path, skip_invalid=True)
        except (SageError, OSError, ValueError) as err:
            self.app.call_from_thread(self._show_report, f"dataset refused: {err}", True)
            return
        names = list(find_placeholders(loaded.examples))
        self.app.call_from_thread(self._show_fills, names)
        shown, error = None, None
        if base_path is None:
            error = "pick a base model"
        else:
            try:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(base_path)
                shown = preview(loaded, tokenizer, max_length)
            except Exception as err:  # any tokenizer trouble only costs the preview
                error = f"{type(err).__name__}: {err}"
        self.app.call_from_thread(self._show_report, describe_dataset(loaded, shown, error), False)

    def _show_fills(self, names: list[str]) -> None:
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

    def _show_report(self, text: str, failed: bool) -> None:
        report = self.query_one("#finetune-dataset-report", Static)
        report.set_class(failed, "-error")
        report.update(text)

    # -- the job it describes ---------------------------------------------------------------

    def _base_name(self) -> str | None:
        value = self.query_one("#finetune-base", Select).value
        return value if isinstance(value, str) else None

    def build_spec(self) -> JobSpec:
        """The job the form describes; SpecError naming what is wrong."""
        base = self.bases.get(self._base_name() or "")
        if base is None:
            raise SpecError("pick a base model (register one on the Models screen)")
        dataset = self.query_one("#finetune-dataset", Input).value.strip()
        if not dataset:
            raise SpecError("enter a dataset path")
        values: dict[str, Any] = {}
        for field, widget_id, label, kind in NUMBER_FIELDS:
            text = self.query_one(f"#{widget_id}", Input).value.strip()
            try:
                values[field] = kind(text)
            except ValueError:
                raise SpecError(f"{label}: {text!r} is not a number") from None
        try:
            values["gpus"] = parse_gpus(self.query_one("#finetune-gpus", Input).value)
        except ValueError as err:
            raise SpecError(str(err)) from None
        preset = self.query_one("#finetune-preset", Select).value
        if isinstance(preset, str):
            values["save_steps"] = PRESETS[preset].values.get("save_steps", DEFAULTS.save_steps)
        spec = JobSpec(
            task_id=self.query_one("#finetune-task", Input).value.strip() or default_task_id(),
            base_model=base.name,
            base_path=base.path,
            dataset=str(Path(dataset).expanduser().absolute()),
            placeholders=self.placeholder_values(),
            **values,
        )
        return spec.check()

    def clear_task_id(self) -> None:
        """Empty the task id after a start: the next job gets a fresh name unless one is typed."""
        self.query_one("#finetune-task", Input).value = ""
