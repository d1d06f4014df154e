"""The Finetune screen: dataset, LoRA settings, the job list and "use as backend".

The App owns the Supervisor and polls it (jobs outlive this screen); the screen shows the
App's `JobsUpdated` lists and calls the Supervisor from thread workers for what the user asks.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from sage_tui.core.gpu import ResourceSnapshot
from sage_tui.core.store import ModelRecord
from sage_tui.core.training.backend import adapter_name, register_job_adapter
from sage_tui.core.training.placement import parse_gpus
from sage_tui.core.training.spec import PRESETS, JobSpec, SpecError, preset_for
from sage_tui.core.training.supervisor import LOG_FILE, Job
from sage_tui.errors import SageError
from sage_tui.ui.messages import JobsUpdated, ModelsChanged, SwitchModelRequested
from sage_tui.ui.modals.use_backend import UseBackendModal
from sage_tui.ui.screens.base import StudioScreen
from sage_tui.ui.widgets.job_table import JobTable, format_eta
from sage_tui.ui.widgets.loss_chart import LossChartPanel

LOG_LINES = 15
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


def job_summary(job: Job) -> str:
    """A line or two about one job for the detail panel (plain text)."""
    parts = [f"{job.id}: {job.status}", f"base {job.base_model}"]
    if job.placement:
        parts.append(f"on {job.placement}")
    if job.step is not None:
        parts.append(f"step {job.step}/{job.total_steps or '?'}")
    if job.tokens_per_second:
        parts.append(f"{job.tokens_per_second:.0f} tokens/s")
    if job.eval_loss is not None:
        parts.append(f"eval loss {job.eval_loss:.4f}")
    if job.status == "running":
        parts.append(f"ETA {format_eta(job.eta_seconds)}")
    text = "  ·  ".join(parts)
    if job.error:
        text += f"\nerror: {job.error}"
    return text


def read_log_tail(path: Path, lines: int = LOG_LINES) -> str:
    """The last `lines` lines of a log file ("" when it does not exist yet)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            chunk = handle.read()
    except OSError:
        return ""
    text = chunk.decode("utf-8", errors="replace").replace("\r", "\n")
    return "\n".join(deque((line for line in text.splitlines() if line.strip()), maxlen=lines))


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


class FinetuneScreen(StudioScreen):
    """A job form on the left; the jobs, the selected job's loss and log on the right."""

    MODE = "finetune"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start", id="finetune.start"),
        Binding("c", "cancel_job", "Cancel job", id="finetune.cancel"),
        Binding("r", "resume_job", "Resume", id="finetune.resume"),
        Binding("delete,d", "delete_job", "Delete", id="finetune.delete"),
        Binding("u", "use_job", "Use as backend", id="finetune.use"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bases: dict[str, ModelRecord] = {}
        """Registered base models by name, as last read."""
        self.losses: dict[str, list[float]] = {}
        """Step losses of the jobs whose detail was read."""
        self._detail_key: tuple[Any, ...] | None = None
        self._preset_from_hardware = False

    # -- layout -----------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="finetune-body"):
            with VerticalScroll(id="finetune-form"):
                yield Label("base model", classes="finetune-label")
                yield Select([], prompt="base model", id="finetune-base", compact=True)
                yield Label("dataset (.jsonl, .json, .csv)", classes="finetune-label")
                with Horizontal(id="finetune-dataset-row"):
                    yield Input(
                        placeholder="path/to/data.jsonl", id="finetune-dataset", compact=True
                    )
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
                        yield Input(
                            _show_number(getattr(DEFAULTS, name)), id=widget_id, compact=True
                        )
                    yield Label("GPUs", classes="finetune-field-label")
                    yield Input(placeholder="any", id="finetune-gpus", compact=True)
                yield Button("Start  ctrl+s", variant="primary", id="finetune-start")
            with Vertical(id="finetune-jobs-panel"):
                yield JobTable(id="finetune-jobs")
                yield Static("No job selected.", id="finetune-job-summary", markup=False)
                yield LossChartPanel(id="finetune-loss")
                yield Static("", id="finetune-log", markup=False)

    def on_mount(self) -> None:
        self.load_bases()
        self.watch(self.app, "resources", self._resources_seen)
        self._show_jobs(self.app.jobs)

    def on_screen_resume(self) -> None:
        self.load_bases()
        self._show_jobs(self.app.jobs)

    # -- base models and presets ------------------------------------------------------------

    @on(ModelsChanged)
    def _models_changed(self) -> None:
        self.load_bases()

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
        from sage_tui.core.dataset_preview import preview
        from sage_tui.core.datasets import find_placeholders, load_dataset_file

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

    # -- starting a job ---------------------------------------------------------------------

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

    def action_start(self) -> None:
        """Check the form and submit the job (in a worker); refuse with a one-line reason."""
        try:
            spec = self.build_spec()
        except SpecError as err:
            self.notify(str(err), title="Job not started", severity="error", markup=False)
            return
        self.submit_job(spec)

    @work(thread=True, exit_on_error=False, group="finetune-jobs", description="start the job")
    def submit_job(self, spec: JobSpec) -> None:
        """Refuse a bad dataset before anything is created, then create and start the job."""
        from sage_tui.core.datasets import load_dataset_file

        loaded = load_dataset_file(spec.dataset, placeholders=spec.placeholders)
        job = self.app.supervisor.submit(spec.with_changes(dataset_format=loaded.format.value))
        self.app.call_from_thread(self._submitted, job)

    def _submitted(self, job: Job) -> None:
        self.notify(f"Job {job.id} {job.status}.", markup=False)
        self.query_one("#finetune-task", Input).value = ""
        self.app.refresh_jobs()

    # -- the job list and the selected job --------------------------------------------------

    @on(JobsUpdated)
    def _jobs_updated(self, message: JobsUpdated) -> None:
        self._show_jobs(message.jobs)

    def _show_jobs(self, jobs: list[Job]) -> None:
        table = self.query_one(JobTable)
        table.show(jobs)
        self._refresh_detail()

    @on(DataTable.RowHighlighted, "#finetune-jobs")
    def _job_highlighted(self) -> None:
        self._refresh_detail()

    def selected_job(self) -> Job | None:
        """The job under the table's cursor, as last polled."""
        selected = self.query_one(JobTable).selected_id
        return next((job for job in self.app.jobs if job.id == selected), None)

    def _refresh_detail(self) -> None:
        job = self.selected_job()
        summary = self.query_one("#finetune-job-summary", Static)
        if job is None:
            self._detail_key = None
            summary.update("No job selected. Fill in the form and press ctrl+s to start one.")
            self.query_one(LossChartPanel).show([])
            self.query_one("#finetune-log", Static).update("")
            return
        summary.set_class(job.status == "failed", "-error")
        summary.update(job_summary(job))
        key = (job.id, job.status, job.step)
        if key != self._detail_key:
            self._detail_key = key
            self.read_detail(job)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="finetune-detail",
        description="read the job's events",
    )
    def read_detail(self, job: Job) -> None:
        """Read the job's step losses and the tail of its train.log."""
        events, _ = self.app.supervisor.events(job.id)
        losses = [
            float(e.data["loss"])
            for e in events
            if e.kind == "step" and isinstance(e.data.get("loss"), (int, float))
        ]
        tail = read_log_tail(Path(job.output_dir) / LOG_FILE)
        self.app.call_from_thread(self._show_detail, job.id, losses, tail)

    def _show_detail(self, job_id: str, losses: list[float], tail: str) -> None:
        self.losses[job_id] = losses
        if self.query_one(JobTable).selected_id != job_id:
            return
        self.query_one(LossChartPanel).show(losses)
        self.query_one("#finetune-log", Static).update(tail or "(train.log is empty)")

    # -- actions on the selected job --------------------------------------------------------

    def _require_selected(self) -> Job | None:
        job = self.selected_job()
        if job is None:
            self.notify("No job selected.", markup=False)
        return job

    def action_cancel_job(self) -> None:
        """Stop the selected job (it saves a checkpoint first)."""
        if (job := self._require_selected()) is not None:
            self.notify(f"Stopping {job.id} ...", markup=False)
            self.job_action("cancel", job.id)

    def action_resume_job(self) -> None:
        """Continue the selected job from its last checkpoint."""
        if (job := self._require_selected()) is not None:
            self.job_action("resume", job.id)

    def action_delete_job(self) -> None:
        """Delete the selected job and its folder (a running one is refused)."""
        if (job := self._require_selected()) is not None:
            self.job_action("delete", job.id)

    @work(thread=True, exit_on_error=False, group="finetune-jobs", description="job action")
    def job_action(self, what: str, job_id: str) -> None:
        """Cancel, resume or delete a job; errors reach the App's error handler."""
        supervisor = self.app.supervisor
        if what == "cancel":
            line = f"Job {job_id} {supervisor.cancel(job_id).status}."
        elif what == "resume":
            line = f"Job {job_id} {supervisor.start(job_id, resume=True).status}."
        else:
            supervisor.delete(job_id)
            line = f"Job {job_id} deleted."
        self.app.call_from_thread(self._job_acted, line)

    def _job_acted(self, line: str) -> None:
        self.notify(line, markup=False)
        self.app.refresh_jobs()

    def action_use_job(self) -> None:
        """Ask, then make the selected completed job's adapter the chat's model."""
        job = self._require_selected()
        if job is None:
            return
        if job.status != "completed":
            self.notify(
                f"Job {job.id} is {job.status}: only a completed job can be used.", markup=False
            )
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.use_as_backend(job)

        self.app.push_screen(UseBackendModal(adapter_name(job.id)), answered)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="finetune-use",
        description="use as backend",
    )
    def use_as_backend(self, job: Job) -> None:
        """Register the job's adapter, make it active, and ask the App to switch the engine."""
        services = self.app.services
        record = register_job_adapter(services.registry, job)
        services.registry.set_active(record.name, services.engines.engine_kind)
        self.post_message(SwitchModelRequested(record.name))
