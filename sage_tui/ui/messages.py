"""Messages between the App, its workers and the screens. Facts are past tense."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from sage_tui.core.gpu import ResourceSnapshot
from sage_tui.core.training.jobs import Job
from sage_tui.studio.state import StudioEvent


@dataclass
class StudioEventArrived(Message, bubble=False):
    """Something changed in the studio (posted from whichever thread it happened on)."""

    event: StudioEvent


@dataclass
class ResourcesSampled(Message):
    """A new GPU / CPU / RAM sample arrived from the monitor thread."""

    snapshot: ResourceSnapshot

    def can_replace(self, message: Message) -> bool:
        # Only the newest figures matter; a backlog of samples is dropped.
        return isinstance(message, ResourcesSampled)


@dataclass
class ModelProvisioning(Message):
    """A step of provisioning the built-in model (a line for the status bar)."""

    line: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ModelProvisioning)


@dataclass
class ModelsChanged(Message, bubble=False):
    """The registry or the active model changed; views of them should reload."""


@dataclass
class SwitchModelRequested(Message):
    """The user chose a model (base or adapter) to chat with."""

    name: str


@dataclass
class JobsUpdated(Message, bubble=False):
    """The fine-tuning jobs as the App's job poller last read them, newest first."""

    jobs: list[Job]

    def can_replace(self, message: Message) -> bool:
        # Only the newest list matters.
        return isinstance(message, JobsUpdated)


@dataclass
class JobEnded(Message):
    """A fine-tuning job completed, failed, was cancelled or was interrupted."""

    job: Job
