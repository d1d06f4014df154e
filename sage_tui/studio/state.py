"""The studio's typed state and the events that announce its changes.

Front ends never poll the services for what they show: they subscribe to the studio
(:class:`Observers`) and receive these events, from whichever thread produced them. The
Textual App turns each into a message and a reactive; the CLI prints what it needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sage_tui.core.text_enum import TextEnum
from sage_tui.core.training.jobs import Job, JobStatus

__all__ = [
    "ActiveModelChanged",
    "EngineChanged",
    "EngineState",
    "EngineStatus",
    "JobEnded",
    "JobStatus",
    "JobsChanged",
    "ModelsChanged",
    "Observer",
    "Observers",
    "ServerChanged",
    "ServerState",
    "StudioEvent",
]

log = logging.getLogger(__name__)


class EngineState(TextEnum):
    """What the inference engine is doing."""

    IDLE = "idle"
    """No model is active, so no engine is wanted."""
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    """The last load failed and nothing serves; `error` says why."""
    STOPPED = "stopped"
    """An engine that was serving died (killed, crashed); the next message reloads it."""


@dataclass(frozen=True)
class EngineStatus:
    """The engine as the front ends show it."""

    state: EngineState = EngineState.IDLE
    model: str | None = None
    """The model being loaded or served (or that failed)."""
    detail: str = ""
    """What is happening now, in a line ("loading smollm2 (vllm, cpu)")."""
    since: float = field(default_factory=time.monotonic)
    """When this state began (time.monotonic)."""
    error: str | None = None
    """Why it failed or stopped."""

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    def line(self, now: float | None = None) -> str:
        """The engine's state in words, for the status line and the chat."""
        if self.state is EngineState.LOADING:
            elapsed = (time.monotonic() if now is None else now) - self.since
            return f"loading {self.model or 'the model'} ({elapsed:.0f} s): {self.detail}".rstrip(
                ": "
            )
        if self.state is EngineState.READY:
            return f"{self.model} ready" + (f" ({self.detail})" if self.detail else "")
        if self.state is EngineState.FAILED:
            return f"engine failed: {self.error}"
        if self.state is EngineState.STOPPED:
            return f"engine stopped: {self.error}"
        return "no model is active: choose one on the Models screen"


@dataclass(frozen=True)
class EngineChanged:
    """The engine's status changed."""

    status: EngineStatus


@dataclass(frozen=True)
class ActiveModelChanged:
    """The chat's model changed (only after a switch that succeeded)."""

    name: str | None


@dataclass(frozen=True)
class ModelsChanged:
    """The registry changed: views of the models should reload."""


@dataclass(frozen=True)
class JobsChanged:
    """The jobs as last polled, newest first."""

    jobs: tuple[Job, ...]


@dataclass(frozen=True)
class JobEnded:
    """A job completed, failed, was cancelled or interrupted (seen by this process)."""

    job: Job


@dataclass(frozen=True)
class ServerState:
    """The studio's OpenAI-compatible API server as the front ends show it."""

    running: bool = False
    url: str = ""
    """The base URL clients take (`http://127.0.0.1:8765/v1`)."""
    base_model: str = ""
    requests: int = 0
    """Requests answered since it started."""
    errors: int = 0
    """Of those, the ones refused or failed (status 400 or more)."""
    key_file: str = ""
    error: str | None = None
    """Why it could not start, or why it stopped."""

    def line(self) -> str:
        """The server in one line, for the Models screen."""
        if self.running:
            requests = f"{self.requests} request" + ("" if self.requests == 1 else "s")
            errors = f"{self.errors} error" + ("" if self.errors == 1 else "s")
            return f"serving {self.url} · {requests} · {errors}"
        if self.error:
            return f"API server: {self.error}"
        return "API server off"


@dataclass(frozen=True)
class ServerChanged:
    """The API server started, stopped, failed or answered a request."""

    state: ServerState


StudioEvent = (
    EngineChanged | ActiveModelChanged | ModelsChanged | JobsChanged | JobEnded | ServerChanged
)
Observer = Callable[[StudioEvent], None]
"""Called with every event, on the thread that produced it: post, do not block."""


class Observers:
    """The studio's subscribers. A failing observer is logged and does not stop the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Add `observer`; returns the function that removes it again."""
        with self._lock:
            self._observers.append(observer)

        def unsubscribe() -> None:
            with self._lock:
                if observer in self._observers:
                    self._observers.remove(observer)

        return unsubscribe

    def publish(self, event: StudioEvent) -> None:
        with self._lock:
            observers = list(self._observers)
        for observer in observers:
            try:
                observer(event)
            except Exception:
                log.exception("a studio observer failed on %s", type(event).__name__)
