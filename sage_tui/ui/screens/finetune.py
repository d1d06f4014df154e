"""The Finetune screen: the job form, the job list, the selected job and "use as backend".

The App follows the jobs (they outlive this screen); the screen shows the App's `JobsUpdated`
lists and calls the studio (`app.studio.jobs`, `app.studio.data`) from workers for what the
user asks: thread workers for the blocking calls, an async one on the App's loop for "Use the
docs" (it talks to the engine).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from sage_tui.core.store import ModelRecord
from sage_tui.core.training.backend import adapter_name
from sage_tui.core.training.jobs import Job
from sage_tui.core.training.probes import ProbeRound
from sage_tui.core.training.spec import SpecError
from sage_tui.errors import SageError
from sage_tui.studio import EngineState
from sage_tui.studio.formatting import job_summary
from sage_tui.studio.jobs import JobRequest
from sage_tui.ui.messages import JobsUpdated, ModelsChanged
from sage_tui.ui.modals.use_backend import UseBackendModal
from sage_tui.ui.plain_text import plain
from sage_tui.ui.screens.base import StudioScreen
from sage_tui.ui.screens.finetune_eval import JobEvaluation
from sage_tui.ui.widgets.eval_view import EvalPanel
from sage_tui.ui.widgets.job_form import JobForm
from sage_tui.ui.widgets.job_table import JobTable
from sage_tui.ui.widgets.loss_chart import LossChartPanel
from sage_tui.ui.widgets.probe_answers import ProbeAnswersPanel

LOG_LINES = 15


def how_to_fill(names: list[str]) -> str:
    """The report's hint for unfilled placeholders, in the form's words."""
    return "type their values in the boxes below"


@dataclass
class DocsProgress(Message):
    """A step of turning docs into a dataset (posted from wherever the studio reports it)."""

    line: str

    def can_replace(self, message: Message) -> bool:
        # Only the latest step is shown: a backlog of older ones is dropped.
        return isinstance(message, DocsProgress)


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


class FinetuneScreen(JobEvaluation, StudioScreen):
    """A job form on the left; the jobs, the selected job's loss and log on the right."""

    MODE = "finetune"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start", id="finetune.start"),
        Binding("c", "cancel_job", "Cancel job", id="finetune.cancel"),
        Binding("r", "resume_job", "Resume", id="finetune.resume"),
        Binding("delete,d", "delete_job", "Delete", id="finetune.delete"),
        Binding("u", "use_job", "Use as backend", id="finetune.use"),
        Binding("e", "evaluate_job", "Evaluate", id="finetune.evaluate"),
        Binding("k", "compare_job", "Compare", id="finetune.compare"),
        Binding("v", "evaluation_rows", "Eval rows", id="finetune.eval_rows", show=False),
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
                with Horizontal(id="finetune-charts"):
                    yield LossChartPanel(id="finetune-loss")
                    yield EvalPanel(id="finetune-eval")
                yield ProbeAnswersPanel(id="finetune-probes")
                yield Static("", id="finetune-log", markup=False)

    def on_mount(self) -> None:
        self.load_bases()
        self._show_jobs(self.app.jobs)

    def on_screen_resume(self) -> None:
        self.load_bases()
        self._detail_key = None  # read the selected job again (`sage-tui eval` may have run)
        self._show_jobs(self.app.jobs)

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
        """Read the registered base models off the event loop, for the form."""
        registry = self.app.services.registry
        bases = [m for m in registry.list() if m.kind == "base"]
        preferred = None
        if registry.active_name:
            try:
                preferred = registry.base_of(registry.get(registry.active_name)).name
            except SageError:
                preferred = None
        self.app.call_from_thread(self.query_one(JobForm).set_bases, bases, preferred)

    # -- checking a dataset -----------------------------------------------------------------

    @on(JobForm.CheckRequested)
    def _check_requested(self, message: JobForm.CheckRequested) -> None:
        self.check_dataset(message.request, message.max_length)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="finetune-check",
        description="check the dataset",
    )
    def check_dataset(self, request: JobRequest, max_length: int) -> None:
        """Read every row the way Start will, then count tokens with the base tokenizer."""
        form = self.query_one(JobForm)  # only its thread-safe methods run through the app
        try:
            report = self.app.studio.data.check(request, max_length, how_to_fill=how_to_fill)
        except (SageError, OSError) as err:
            self.app.call_from_thread(form.show_report, f"dataset refused: {err}", True)
            return
        except ValueError as err:  # "embedded null byte" and the like: say which path
            refused = f"dataset refused: {request.dataset}: {err}"
            self.app.call_from_thread(form.show_report, refused, True)
            return
        if get_current_worker().is_cancelled:
            return  # a newer Check (the settings changed meanwhile) shows its own report
        self.app.call_from_thread(form.show_fills, report.unfilled)
        self.app.call_from_thread(form.show_report, report.text, report.refused, report.pieces)

    # -- its memory -------------------------------------------------------------------------

    @on(JobForm.MemoryRequested)
    def _memory_requested(self, message: JobForm.MemoryRequested) -> None:
        self.estimate_memory(message.request)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="finetune-memory",
        description="estimate the job's memory",
    )
    def estimate_memory(self, request: JobRequest) -> None:
        """The job's memory line, off the event loop (it reads the base model's headers)."""
        form = self.query_one(JobForm)  # only its thread-safe methods run through the app
        try:
            fit = self.app.studio.jobs.estimate(request)
        except SageError as err:
            line = f"memory: - ({err})"
        else:
            line = fit.line if fit is not None else "memory: -"
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(form.show_memory, line)

    # -- a dataset from docs ----------------------------------------------------------------

    @on(JobForm.DocsRequested)
    def _docs_requested(self, message: JobForm.DocsRequested) -> None:
        ready = self.app.studio.engine.status.state is EngineState.READY
        self.dataset_from_docs(message.folder, message.model_questions and ready)

    @work(exclusive=True, exit_on_error=False, group="finetune-docs", description="use the docs")
    async def dataset_from_docs(self, folder: Path, model_questions: bool) -> None:
        """Turn the docs into a JSONL dataset (on the App's loop: the model may write the
        questions), then put it in the form and check it."""
        form = self.query_one(JobForm)
        how = "the model writes the questions" if model_questions else "templated questions"
        form.show_report(f"reading the docs in {folder} ({how}) ...", failed=False)
        try:
            result = await self.app.studio.data.from_docs(
                folder,
                model_questions=model_questions,
                progress=lambda line: self.post_message(DocsProgress(line)),
            )
        except SageError as err:
            form.show_report(f"docs not turned into a dataset: {err}", failed=True)
            self.notify(str(err), title="Use the docs", severity="error")
            return
        self.notify(result.note, title="Use the docs")
        form.use_dataset(result.path)

    @on(DocsProgress)
    def _docs_progress(self, message: DocsProgress) -> None:
        worker = next(
            (w for w in self.workers if w.group == "finetune-docs" and w.is_running), None
        )
        if worker is not None:  # a late step must not cover the Check that followed
            self.query_one(JobForm).show_report(message.line, failed=False)

    # -- starting a job ---------------------------------------------------------------------

    @on(JobForm.StartRequested)
    def _start_requested(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        """Read the form and submit the job (in a worker); refuse with a one-line reason."""
        try:
            request = self.query_one(JobForm).build_request()
        except SpecError as err:
            self.notify(str(err), title="Job not started", severity="error", markup=False)
            return
        self.submit_job(request)

    @work(thread=True, exit_on_error=False, group="finetune-jobs", description="start the job")
    def submit_job(self, request: JobRequest) -> None:
        """Check everything (as the CLI does), then create and start the job."""
        try:
            job = self.app.studio.jobs.submit(request)
        except SageError as err:
            self.app.call_from_thread(
                self.notify, str(err), title="Job not started", severity="error", markup=False
            )
            return
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
            self.query_one(EvalPanel).show(None)
            self.query_one(ProbeAnswersPanel).show((), ())
            self.query_one("#finetune-log", Static).update("")
            return
        summary.set_class(job.status == "failed", "-error")
        summary.update(plain(job_summary(job, self.app.resources)))
        key = (job.id, job.status, job.progress.step)
        if key != self._detail_key:
            self._detail_key = key
            self.read_detail(job)
            self.read_evaluation(job)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="finetune-detail",
        description="read the job's events",
    )
    def read_detail(self, job: Job) -> None:
        """Read the job's step losses, its probe rounds and the tail of its train.log (the
        studio reads only the events appended since the last time)."""
        detail = self.app.studio.jobs.detail(job.id)
        tail = "\n".join(filter(None, (detail.problem, detail.log_tail)))
        probes = (job.spec.probes, detail.probes)
        self.app.call_from_thread(self._show_detail, job.id, list(detail.losses), tail, probes)

    def _show_detail(
        self,
        job_id: str,
        losses: list[float],
        tail: str,
        probes: tuple[tuple[str, ...], tuple[ProbeRound, ...]],
    ) -> None:
        self.losses[job_id] = losses
        if self.query_one(JobTable).selected_id != job_id:
            return
        self.query_one(LossChartPanel).show(losses)
        self.query_one(ProbeAnswersPanel).show(*probes)
        self.query_one("#finetune-log", Static).update(plain(tail or "(train.log is empty)"))

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
        jobs = self.app.studio.jobs
        if what == "cancel":
            line = f"Job {job_id} {jobs.cancel(job_id).status}."
        elif what == "resume":
            line = f"Job {job_id} {jobs.resume(job_id).status}."
        else:
            jobs.delete(job_id)
            line = f"Job {job_id} deleted."
        self.app.call_from_thread(self.notify, line, markup=False)

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
                self.app.use_as_backend(job.id)

        self.app.push_screen(UseBackendModal(adapter_name(job.id)), answered)
