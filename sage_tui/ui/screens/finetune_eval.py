"""The Finetune screen's answers to "is the tuned model better?" on a finished job.

`e` evaluates the selected completed job (its held-out rows answered by the base and the adapter
in one engine, scored; the studio keeps the result in the job's folder) and shows the summary
beside the loss chart, `v` every row, `k` opens Compare mode with the base and the adapter.
"""

from __future__ import annotations

from textual import work

from sage_tui.core.training.jobs import Job
from sage_tui.errors import SageError
from sage_tui.studio.evaluation import Evaluation
from sage_tui.ui.widgets.eval_view import EvalPanel, EvalRowsModal


class JobEvaluation:
    """Evaluate and compare actions, mixed into the Finetune screen (which provides
    `_require_selected` and `selected_job`)."""

    evaluating: str | None = None
    """The job being evaluated now (one at a time)."""

    def _completed(self) -> Job | None:
        job = self._require_selected()
        if job is not None and job.status != "completed":
            self.notify(f"Job {job.id} is {job.status}: only a completed job has an adapter.")
            return None
        return job

    # -- the saved evaluation of the selected job -------------------------------------------

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="finetune-evaluation",
        description="read the job's evaluation",
    )
    def read_evaluation(self, job: Job) -> None:
        """Read the job's evaluation.json off the event loop."""
        try:
            saved = self.app.studio.evaluation.saved(job.id) if job.status == "completed" else None
        except SageError as err:
            self.app.call_from_thread(self._evaluation_read, job, None, str(err))
            return
        self.app.call_from_thread(self._evaluation_read, job, saved, None)

    def _evaluation_read(self, job: Job, saved: Evaluation | None, problem: str | None) -> None:
        if not self._shows(job.id) or self.evaluating == job.id:
            return
        panel = self.query_one(EvalPanel)
        if problem is not None:
            panel.say(problem)
        elif saved is None and job.status != "completed":
            panel.say("evaluation: once the job completes, e scores it against its base")
        else:
            panel.show(saved, job.base_model)

    # -- actions ----------------------------------------------------------------------------

    def action_evaluate_job(self) -> None:
        """Score the selected completed job's adapter against its base on held-out rows."""
        job = self._completed()
        if job is None:
            return
        if self.evaluating is not None:
            self.notify(f"Job {self.evaluating} is being evaluated; one at a time.")
            return
        self.evaluating = job.id
        self.query_one(EvalPanel).say(f"evaluating {job.id}: loading the engine ...")
        self.evaluate_job(job)

    @work(exit_on_error=False, group="finetune-evaluate", description="evaluate the job")
    async def evaluate_job(self, job: Job) -> None:
        """Run the evaluation (the engine answers on the App's loop); the panel follows it."""
        panel = self.query_one(EvalPanel)

        def progress(done: int, total: int) -> None:
            if self._shows(job.id):
                panel.say(f"evaluating {job.id}: {done} of {total} rows answered")

        try:
            # A job that held no rows out is scored on its training rows (the caption says so).
            result = await self.app.studio.evaluation.evaluate(
                job.id, progress=progress, or_training_rows=True
            )
        except SageError as err:
            panel.say(f"not evaluated: {err}")
            self.notify(str(err), title="Not evaluated", severity="error")
            return
        finally:
            self.evaluating = None
        self.notify(f"Job {job.id} evaluated on {len(result.rows)} rows in {result.seconds:.0f} s.")
        if self._shows(job.id):
            panel.show(result, job.base_model)

    def _shows(self, job_id: str) -> bool:
        """Whether `job_id` is the job shown now (the panel belongs to it)."""
        selected = self.selected_job()
        return selected is not None and selected.id == job_id

    def action_evaluation_rows(self) -> None:
        """Every row of the selected job's evaluation."""
        job = self._require_selected()
        panel = self.query_one(EvalPanel)
        if job is None or panel.evaluation is None:
            self.notify("No evaluation to show: press e on a completed job first.")
            return
        self.app.push_screen(EvalRowsModal(panel.evaluation, job.base_model))

    def action_compare_job(self) -> None:
        """Open Compare mode with the selected completed job's base and adapter."""
        job = self._completed()
        if job is not None:
            self.compare_job(job)

    @work(thread=True, exit_on_error=False, group="finetune-jobs", description="compare the job")
    def compare_job(self, job: Job) -> None:
        """Register the job's adapter (if it is not yet), then open Compare mode."""
        adapter = self.app.studio.jobs.adapter_for_use(job.id)
        self.app.call_from_thread(self.app.open_compare, [job.base_model, adapter])
