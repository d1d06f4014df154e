"""The sage-tui App: three modes (Finetune, Models, Chat) under an always-visible status line.

The App owns the long-lived work: the resource poller and the built-in model's provisioning
run as thread workers here, so they outlive screen switches. Services come in from the
composition root (`cli.py`); tests hand in their own.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive
from textual.worker import Worker, WorkerState, get_current_worker

from sage_tui.core.gpu import ResourceMonitor, ResourceSnapshot
from sage_tui.core.training.jobs import ENDED, Job
from sage_tui.core.training.supervisor import Supervisor
from sage_tui.errors import SageError
from sage_tui.services import Services
from sage_tui.ui.messages import (
    JobEnded,
    JobsUpdated,
    ModelProvisioning,
    ModelsChanged,
    ResourcesSampled,
    SwitchModelRequested,
)
from sage_tui.ui.screens.chat import ChatScreen
from sage_tui.ui.screens.finetune import FinetuneScreen
from sage_tui.ui.screens.models import ModelsScreen

STYLES = Path(str(resources.files("sage_tui.styles")))


class SageApp(App[None]):
    """The studio."""

    TITLE = "sage-tui"
    CSS_PATH = [STYLES / f"{name}.tcss" for name in ("app", "finetune", "models", "chat")]
    MODES = {"finetune": FinetuneScreen, "models": ModelsScreen, "chat": ChatScreen}
    DEFAULT_MODE = "chat"
    BINDINGS = [
        # Digits when no text box has focus; F-keys always (a focused input takes digits).
        Binding("1,f1", "switch_mode('finetune')", "Finetune", id="mode.finetune"),
        Binding("2,f2", "switch_mode('models')", "Models", id="mode.models"),
        Binding("3,f3", "switch_mode('chat')", "Chat", id="mode.chat"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    JOB_POLL_SECONDS = 1.0
    """How often the fine-tuning jobs are polled."""

    active_model: reactive[str | None] = reactive(None)
    """Name of the model the chat uses."""
    model_status: reactive[str] = reactive("")
    """What is happening to the model right now (provisioning, loading), or ""."""
    resources: reactive[ResourceSnapshot | None] = reactive(None)
    """The latest GPU / CPU / RAM figures."""
    engine_state: reactive[str] = reactive("idle")
    """"idle" (no model), "loading", "ready" or "failed"."""
    engine_error: reactive[str] = reactive("")
    """Why the engine failed, when it did."""

    def __init__(
        self,
        services: Services,
        monitor: ResourceMonitor | None = None,
        *,
        provision_default: bool = True,
        start_engine: bool = True,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__()
        self.services = services
        self.monitor = monitor if monitor is not None else services.monitor
        self.provision_default = provision_default
        self.start_engine = start_engine
        self.engine_loading_since = 0.0
        """When the current engine load began (time.monotonic)."""
        services.engines.on_status = self._engine_status
        self.supervisor = (
            supervisor
            if supervisor is not None
            else Supervisor(
                services.store,
                services.settings.paths,
                jobs_per_device=services.settings.jobs_per_gpu,
            )
        )
        """Fine-tuning jobs; owned here because jobs outlive screens."""
        self.jobs: list[Job] = []
        """The jobs as last polled, newest first."""
        self._job_statuses: dict[str, str] | None = None
        self._polling_jobs = False

    def on_mount(self) -> None:
        # After the first frame: provisioning imports torch, and its GIL time would delay it.
        self.call_after_refresh(self.poll_resources)
        self.call_after_refresh(self.load_active_model)
        # A short poll each tick rather than one endless worker: the jobs table is the truth,
        # and a finished poll leaves no worker behind for tests that wait for quiet.
        self.call_after_refresh(self.refresh_jobs)
        self.set_interval(self.JOB_POLL_SECONDS, self.refresh_jobs, name="poll jobs")

    # -- workers ----------------------------------------------------------------------------

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="resources", description="poll GPU"
    )
    def poll_resources(self) -> None:
        """Sample GPU / CPU / RAM about once a second until the App exits."""
        worker = get_current_worker()
        interval = self.services.settings.resource_poll_seconds
        try:
            while not worker.is_cancelled:
                self.post_message(ResourcesSampled(self.monitor.sample()))
                worker.cancelled_event.wait(interval)
        finally:
            self.monitor.close()

    def refresh_jobs(self) -> None:
        """Poll the jobs now (unless a poll is under way); JobsUpdated follows."""
        # One poll at a time: a slow one (the disk, a cancel holding the lock) is not doubled.
        if not self._polling_jobs:
            self._polling_jobs = True
            self.poll_jobs()

    @work(thread=True, exit_on_error=False, group="jobs", description="poll jobs")
    def poll_jobs(self) -> None:
        """Follow the fine-tuning jobs once (re-attaching on the first call); report endings."""
        try:
            self._poll_jobs_once()
        finally:
            self._polling_jobs = False

    def _poll_jobs_once(self) -> None:
        if self._job_statuses is None:
            self.supervisor.reattach()
        else:
            self.supervisor.poll()
        jobs = self.supervisor.list()
        before, self._job_statuses = self._job_statuses, {job.id: job.status for job in jobs}
        self.post_message(JobsUpdated(jobs))
        if before is None:
            return  # endings from before this launch are not news
        for job in jobs:
            if job.status in ENDED and before.get(job.id) != job.status:
                self.post_message(JobEnded(job))

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="models", description="active model"
    )
    def load_active_model(self) -> None:
        """Read the active model; provision the built-in one first if it is missing."""
        registry = self.services.registry
        default = self.services.settings.default_model
        if self.provision_default and default and not registry.builtin_ready(default):
            self.post_message(ModelProvisioning(f"preparing {default} (first launch)"))
            try:
                registry.pull(
                    default, progress=lambda line: self.post_message(ModelProvisioning(line))
                )
            finally:
                self.post_message(ModelProvisioning(""))
        self.call_from_thread(setattr, self, "active_model", registry.active_name)
        self.post_message(ModelsChanged())
        if self.start_engine and registry.active_name:
            self.call_from_thread(self.load_engine)

    @work(exclusive=True, exit_on_error=False, group="engine", description="load the engine")
    async def load_engine(self, name: str | None = None) -> None:
        """Start the engine for the active model, or switch to `name`."""
        engines = self.services.engines
        self.engine_loading_since = time.monotonic()
        self.engine_state = "loading"
        try:
            if name is None:
                await engines.ensure_loaded()
            else:
                result = await engines.switch_model(name)
                how = "no reload" if not result.reloaded else f"loaded in {result.seconds:.0f} s"
                self.notify(f"Chatting with {name} ({how}).", markup=False)
        except SageError as err:
            self.engine_error = str(err)
            # A failed switch rolls back: the engine may still serve the previous model.
            self.engine_state = "ready" if engines.loaded_base is not None else "failed"
            self.notify(str(err), title="Model not switched", severity="error", markup=False)
        else:
            self.engine_state = "ready"
        finally:
            self.active_model = self.services.registry.active_name
            self.model_status = ""
            self.post_message(ModelsChanged())

    def _engine_status(self, line: str) -> None:
        # Called by the engine manager on this event loop.
        self.model_status = line

    @on(SwitchModelRequested)
    def _switch_model(self, message: SwitchModelRequested) -> None:
        self.load_engine(message.name)

    async def action_quit(self) -> None:
        """Stop the engine (freeing its memory), then exit."""
        self.model_status = "stopping the engine"
        await self.services.engines.shutdown()
        self.exit()

    # -- messages ---------------------------------------------------------------------------

    @on(ResourcesSampled)
    def _resources_sampled(self, message: ResourcesSampled) -> None:
        self.resources = message.snapshot

    @on(JobsUpdated)
    def _jobs_updated(self, message: JobsUpdated) -> None:
        self.jobs = message.jobs
        if self.screen_stack:  # none while the App shuts down
            self.screen.post_message(JobsUpdated(message.jobs))

    @on(JobEnded)
    def _job_ended(self, message: JobEnded) -> None:
        job = message.job
        self.bell()
        if self._driver is not None:
            # OSC 9: a desktop notification in terminals that support it (others ignore it).
            self._driver.write(f"\x1b]9;sage-tui: job {job.id} {job.status}\x07")
        severity = "information" if job.status == "completed" else "warning"
        detail = f": {job.error}" if job.error else ""
        self.notify(f"Job {job.id} {job.status}{detail}", severity=severity, markup=False)

    @on(ModelProvisioning)
    def _model_provisioning(self, message: ModelProvisioning) -> None:
        self.model_status = message.line

    @on(ModelsChanged)
    def _models_changed(self) -> None:
        # Screens other than the current one reload when they are shown again.
        self.screen.post_message(ModelsChanged())

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """One place where any worker's failure becomes a message to the user."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        what = event.worker.description or event.worker.name
        text = str(error) if isinstance(error, SageError) else f"{type(error).__name__}: {error}"
        self.notify(f"{what}: {text}", title="Error", severity="error", timeout=10, markup=False)
