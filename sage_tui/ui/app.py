"""The sage-tui App: four modes (Finetune, Models, Chat, Compare) under one status line.

The App is a thin adapter over the studio (`sage_tui.studio.Studio`): it subscribes to the
studio's events and turns each into a reactive or a message, and it owns the long-lived work
(the resource poller, the job poll, engine loads and switches) as workers, so that work
outlives screen switches. Services come in from the composition root (`cli`); tests hand in
their own through the same door.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.filter import LineFilter
from textual.notifications import SeverityLevel
from textual.reactive import reactive
from textual.worker import Worker, WorkerState, get_current_worker

from sage_tui.core.gpu import ResourceSnapshot
from sage_tui.core.gpu_history import GpuHistory
from sage_tui.core.safe_text import visible
from sage_tui.core.training.jobs import Job
from sage_tui.errors import SageError, describe_error
from sage_tui.services import Services
from sage_tui.studio import EngineStatus, Studio, state
from sage_tui.ui.messages import (
    JobEnded,
    JobsUpdated,
    ModelProvisioning,
    ModelsChanged,
    ResourcesSampled,
    StudioEventArrived,
    SwitchModelRequested,
)
from sage_tui.ui.modals.gpu_panel import GpuPanel
from sage_tui.ui.plain_text import ControlFilter
from sage_tui.ui.screens.chat import ChatScreen
from sage_tui.ui.screens.compare import CompareScreen
from sage_tui.ui.screens.finetune import FinetuneScreen
from sage_tui.ui.screens.models import ModelsScreen

STYLES = Path(str(resources.files("sage_tui.styles")))


@dataclass(frozen=True)
class CompareRequest:
    """Models to pick on the Compare screen, or a saved compare conversation to open."""

    models: list[str]
    conversation_id: int | None = None


class SageApp(App[None]):
    """The studio."""

    TITLE = "sage-tui"
    CSS_PATH = [
        STYLES / f"{name}.tcss"
        for name in ("app", "finetune", "models", "chat", "compare", "gpu_panel")
    ]
    MODES = {
        "finetune": FinetuneScreen,
        "models": ModelsScreen,
        "chat": ChatScreen,
        "compare": CompareScreen,
    }
    DEFAULT_MODE = "chat"
    BINDINGS = [
        # Digits when no text box has focus; F-keys always (a focused input takes digits).
        Binding("1,f1", "switch_mode('finetune')", "Finetune", id="mode.finetune"),
        Binding("2,f2", "switch_mode('models')", "Models", id="mode.models"),
        Binding("3,f3", "switch_mode('chat')", "Chat", id="mode.chat"),
        Binding("4,f4", "switch_mode('compare')", "Compare", id="mode.compare"),
        Binding("ctrl+g", "gpu_panel", "GPUs", id="app.gpus"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    JOB_POLL_SECONDS = 1.0
    """How often the fine-tuning jobs are polled."""
    HEALTH_SECONDS = 1.0
    """How often the engine is checked for a process that died."""

    engine: reactive[EngineStatus] = reactive(EngineStatus)
    """What the engine is doing (the studio's EngineStatus)."""
    active_model: reactive[str | None] = reactive(None)
    """Name of the model the chat uses."""
    model_status: reactive[str] = reactive("")
    """Provisioning of the built-in model, in a line ("" when none is under way)."""
    resources: reactive[ResourceSnapshot | None] = reactive(None)
    """The latest GPU / CPU / RAM figures."""
    server: reactive[state.ServerState] = reactive(state.ServerState)
    """The OpenAI-compatible API server (the studio's ServerState): URL, requests, errors."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.studio = Studio(services)
        """Every use case; the screens call it (from workers) for what the user asks."""
        self.jobs: list[Job] = []
        """The jobs as last polled, newest first."""
        self._polling_jobs = False
        self.compare_request: CompareRequest | None = None
        """What the Compare screen shows next (models, or a saved conversation)."""
        self._unsubscribe = self.studio.subscribe(self._studio_event)
        self._control_filter = ControlFilter()
        self.gpu_history = GpuHistory()
        """Each GPU's recent utilisation and memory, for the GPU panel's sparklines."""

    def get_line_filters(self) -> Sequence[LineFilter]:
        """Textual's filters, then `ControlFilter`: no terminal control in any widget's text
        reaches the terminal, whichever way it got there."""
        return [*super().get_line_filters(), self._control_filter]

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """A toast. Its words are data (errors quote files, models, datasets): never parsed as
        markup, controls made visible. `markup` is accepted for Textual's callers and ignored."""
        super().notify(
            visible(str(message)),
            title=visible(str(title)),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    def on_mount(self) -> None:
        # After the first frame: provisioning imports torch, and its GIL time would delay it.
        self.call_after_refresh(self.poll_resources)
        self.call_after_refresh(self.load_active_model)
        # A short poll each tick rather than one endless worker: the jobs table is the truth,
        # and a finished poll leaves no worker behind for tests that wait for quiet.
        self.call_after_refresh(self.refresh_jobs)
        self.set_interval(self.JOB_POLL_SECONDS, self.refresh_jobs, name="poll jobs")
        self.set_interval(self.HEALTH_SECONDS, self.check_engine, name="engine health")
        if not self.is_headless:
            # Textual leaves SIGHUP (the terminal or the SSH connection gone) to its default,
            # which ends the process on the spot: quit as ctrl+q does instead, so the reply
            # being streamed is saved (marked cut off) and the engine's memory is freed. Jobs
            # train on in their own sessions.
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hung_up)

    def _hung_up(self) -> None:
        self.call_later(self.action_quit)

    def on_unmount(self) -> None:
        self._unsubscribe()
        if not self.is_headless:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    # -- studio events ------------------------------------------------------------------------

    def _studio_event(self, event: state.StudioEvent) -> None:
        # Called on whichever thread produced the event: post_message is thread-safe.
        self.post_message(StudioEventArrived(event))

    @on(StudioEventArrived)
    def _studio_event_arrived(self, message: StudioEventArrived) -> None:
        event = message.event
        if isinstance(event, state.EngineChanged):
            self.engine = event.status
        elif isinstance(event, state.ActiveModelChanged):
            self.active_model = event.name
        elif isinstance(event, state.ModelsChanged):
            if self.screen_stack:
                self.screen.post_message(ModelsChanged())
        elif isinstance(event, state.JobsChanged):
            self.jobs = list(event.jobs)
            if self.screen_stack:  # none while the App shuts down
                self.screen.post_message(JobsUpdated(self.jobs))
        elif isinstance(event, state.JobEnded):
            self._job_ended(event.job)
        elif isinstance(event, state.ServerChanged):
            self.server = event.state

    def _job_ended(self, job: Job) -> None:
        self.post_message(JobEnded(job))
        self.bell()
        if self._driver is not None:
            # OSC 9: a desktop notification in terminals that support it (others ignore it).
            # The id is visible()d: a BEL or ESC in it cannot end the sequence early.
            self._driver.write(f"\x1b]9;sage-tui: job {visible(job.id)} {job.status}\x07")
        severity = "information" if job.status == "completed" else "warning"
        detail = f": {job.error}" if job.error else ""
        self.notify(f"Job {job.id} {job.status}{detail}", severity=severity, markup=False)

    # -- workers ------------------------------------------------------------------------------

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="resources", description="poll GPU"
    )
    def poll_resources(self) -> None:
        """Sample GPU / CPU / RAM about once a second, with who holds each GPU, until the App
        exits."""
        worker = get_current_worker()
        interval = self.services.settings.resource_poll_seconds
        monitor = self.services.monitor
        who_holds = self.studio.gpu_use.attribute
        try:
            while not worker.is_cancelled:
                self.post_message(ResourcesSampled(who_holds(monitor.sample())))
                worker.cancelled_event.wait(interval)
        finally:
            monitor.close()  # NVML is shut down with the poller (it reopens on demand)

    def refresh_jobs(self) -> None:
        """Poll the jobs now (unless a poll is under way); JobsUpdated follows."""
        # One poll at a time: a slow one (the disk, a cancel holding the lock) is not doubled.
        if not self._polling_jobs:
            self._polling_jobs = True
            self.poll_jobs()

    @work(thread=True, exit_on_error=False, group="jobs", description="poll jobs")
    def poll_jobs(self) -> None:
        """Follow the fine-tuning jobs once (re-attaching on the first call)."""
        try:
            self.studio.jobs.poll()
        finally:
            self._polling_jobs = False

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="models", description="active model"
    )
    def load_active_model(self) -> None:
        """Provision the built-in model if it is missing, then start the engine for the
        active model."""
        try:
            self.studio.provision_default(lambda line: self.post_message(ModelProvisioning(line)))
        finally:
            self.post_message(ModelProvisioning(""))
        active = self.services.registry.active_name
        self.call_from_thread(setattr, self, "active_model", active)
        self.call_from_thread(self.start_engine)

    @work(exit_on_error=False, group="engine", description="load the engine")
    async def start_engine(self) -> None:
        """Load the engine for the active model (the status says how it went)."""
        await self.studio.engine.start()

    @work(exit_on_error=False, group="engine", description="switch model")
    async def switch_model(self, name: str) -> None:
        """Switch the chat to `name`. Never exclusive: a second switch waits for the first
        instead of cancelling it half-loaded."""
        try:
            result = await self.studio.engine.switch(name)
        except SageError as err:
            self.notify(str(err), title="Model not switched", severity="error", markup=False)
            return
        how = "no reload" if not result.reloaded else f"loaded in {result.seconds:.0f} s"
        self.notify(f"Chatting with {name} ({how}).", markup=False)

    @work(exit_on_error=False, group="engine", description="use as backend")
    async def use_as_backend(self, name: str) -> None:
        """Make a finished job's adapter (or a model) the chat's model."""
        try:
            result = await self.studio.use_as_backend(name)
        except SageError as err:
            self.notify(str(err), title="Not used as backend", severity="error", markup=False)
            return
        how = "no reload" if not result.reloaded else f"loaded in {result.seconds:.0f} s"
        self.notify(f"Chatting with {result.model.name} ({how}).", markup=False)

    @work(exclusive=True, exit_on_error=False, group="health", description="engine health")
    async def check_engine(self) -> None:
        """Notice an engine whose process died; say so once."""
        reason = await self.studio.engine.check_health()
        if reason is not None:
            self.notify(
                f"The engine stopped: {reason}. Send a message or press ctrl+r to reload.",
                title="Engine stopped",
                severity="error",
                timeout=15,
                markup=False,
            )

    @work(exit_on_error=False, group="engine", description="reload the engine")
    async def reload_engine(self) -> None:
        """Load the active model again (after the engine stopped or failed)."""
        await self.studio.engine.reload()

    def open_compare(
        self, models: Sequence[str] | None = None, conversation_id: int | None = None
    ) -> None:
        """Show the Compare screen with `models` picked, or a saved compare conversation."""
        self.compare_request = CompareRequest(list(models or []), conversation_id)
        if self.current_mode == "compare":
            self.screen.on_screen_resume()
        else:
            self.switch_mode("compare")

    @on(SwitchModelRequested)
    def _switch_requested(self, message: SwitchModelRequested) -> None:
        self.switch_model(message.name)

    async def action_quit(self) -> None:
        """Stop the engine (freeing its memory), then exit."""
        # A reply still streaming is cut off by quitting: saved as such before the engine stops.
        replies = [w for w in self.workers if w.group == "chat-reply" and not w.is_finished]
        for worker in replies:
            worker.cancel()
        if replies:  # an empty list would wait for every worker, the pollers that never end too
            await self.workers.wait_for_complete(replies)
        self.model_status = "stopping the engine"
        await self.studio.shutdown()
        self.exit()

    # -- messages -----------------------------------------------------------------------------

    @on(ResourcesSampled)
    def _resources_sampled(self, message: ResourcesSampled) -> None:
        self.gpu_history.add(message.snapshot)
        self.resources = message.snapshot

    def action_gpu_panel(self) -> None:
        """Show who holds each GPU, with recent utilisation and memory (Esc closes it)."""
        if not isinstance(self.screen, GpuPanel):
            self.push_screen(GpuPanel())

    @on(ModelProvisioning)
    def _model_provisioning(self, message: ModelProvisioning) -> None:
        self.model_status = message.line

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """One place where any worker's failure becomes a message to the user."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        what = event.worker.description or event.worker.name
        self.notify(
            f"{what}: {describe_error(error)}",
            title="Error",
            severity="error",
            timeout=10,
            markup=False,
        )
