"""The Finetune screen: the job form, the job list, the selected job and "use as backend".

The App owns the Supervisor and polls it (jobs outlive this screen); the screen shows the
App's `JobsUpdated` lists and calls the Supervisor from thread workers for what the user asks.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Static

from sage_tui.core.gpu import ResourceSnapshot, format_bytes
from sage_tui.core.store import ModelRecord
from sage_tui.core.training.backend import adapter_name, register_job_adapter
from sage_tui.core.training.jobs import Job
from sage_tui.core.training.spec import JobSpec, SpecError
from sage_tui.core.training.supervisor import LOG_FILE
from sage_tui.ui.messages import JobsUpdated, ModelsChanged, SwitchModelRequested
from sage_tui.ui.modals.use_backend import UseBackendModal
from sage_tui.ui.screens.base import StudioScreen
from sage_tui.ui.widgets.job_form import JobForm
from sage_tui.ui.widgets.job_table import JobTable, format_eta
from sage_tui.ui.widgets.loss_chart import LossChartPanel

LOG_LINES = 15


def job_summary(job: Job, resources: ResourceSnapshot | None = None) -> str:
    """A line or two about one job for the detail panel (plain text); a running job's GPUs
    with their memory in use, from `resources`."""
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
    text = "  ·  ".join(parts) + _gpu_memory(job, resources)
    if job.error:
        text += f"\nerror: {job.error}"
    return text


def _gpu_memory(job: Job, resources: ResourceSnapshot | None) -> str:
    if job.status != "running" or not job.gpus or resources is None:
        return ""
    held = [gpu for gpu in resources.gpus if gpu.index in job.gpus]
    if not held:
        return ""
    return "".join(
        f"\nGPU {gpu.index}: {format_bytes(gpu.memory_used)}/{format_bytes(gpu.memory_total)}"
        " in use" + (f", {gpu.utilization}% busy" if gpu.utilization is not None else "")
        for gpu in held
    )


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
        self.losses: dict[str, list[float]] = {}
        """Step losses of the jobs whose detail was read."""
        self._detail_key: tuple[Any, ...] | None = None

    @property
    def bases(self) -> dict[str, ModelRecord]:
        """Registered base models by name, as the job form last read them."""
        return self.query_one(JobForm).bases

    # -- layout -----------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="finetune-body"):
            yield JobForm(id="finetune-form")
            with Vertical(id="finetune-jobs-panel"):
                yield JobTable(id="finetune-jobs")
                yield Static("No job selected.", id="finetune-job-summary", markup=False)
                yield LossChartPanel(id="finetune-loss")
                yield Static("", id="finetune-log", markup=False)

    def on_mount(self) -> None:
        self._show_jobs(self.app.jobs)

    def on_screen_resume(self) -> None:
        self.query_one(JobForm).load_bases()
        self._show_jobs(self.app.jobs)

    @on(ModelsChanged)
    def _models_changed(self) -> None:
        self.query_one(JobForm).load_bases()

    # -- starting a job ---------------------------------------------------------------------

    @on(Button.Pressed, "#finetune-start")
    def _start_pressed(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        """Check the form and submit the job (in a worker); refuse with a one-line reason."""
        try:
            spec = self.query_one(JobForm).build_spec()
        except SpecError as err:
            self.notify(str(err), title="Job not started", severity="error", markup=False)
            return
        self.submit_job(spec)

    @work(thread=True, exit_on_error=False, group="finetune-jobs", description="start the job")
    def submit_job(self, spec: JobSpec) -> None:
        """Refuse a bad dataset before anything is created, then create and start the job."""
        from sage_tui.core.data import load_dataset_file

        loaded = load_dataset_file(spec.dataset, placeholders=spec.placeholders)
        job = self.app.supervisor.submit(spec.with_changes(dataset_format=loaded.format.value))
        self.app.call_from_thread(self._submitted, job)

    def _submitted(self, job: Job) -> None:
        self.notify(f"Job {job.id} {job.status}.", markup=False)
        self.query_one(JobForm).clear_task_id()
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
        summary.update(job_summary(job, self.app.resources))
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
