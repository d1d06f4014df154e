"""The studio: one object holding every use case, built once by the composition root.

The CLI, the Textual App and the HTTP API hold a :class:`Studio` and call it; none of them
talks to the supervisor, the registry or the engine manager for an action. Changes reach them
as events (:mod:`sage_tui.studio.state`) through :meth:`Studio.subscribe`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sage_tui.core.chat import ChatSession
from sage_tui.core.conversations import ConversationStore
from sage_tui.core.engines.manager import SwitchResult
from sage_tui.core.models.builtin import Progress
from sage_tui.core.store import ModelRecord
from sage_tui.services import Services
from sage_tui.studio.arena import ArenaDesk
from sage_tui.studio.compare import CompareDesk
from sage_tui.studio.compare_session import CompareSession
from sage_tui.studio.datasets import DataDesk
from sage_tui.studio.engine import EngineDesk
from sage_tui.studio.evaluation import EvalDesk
from sage_tui.studio.gpu_use import GpuUseDesk
from sage_tui.studio.jobs import JobDesk
from sage_tui.studio.models import ModelDesk
from sage_tui.studio.serving import ServeDesk
from sage_tui.studio.state import ActiveModelChanged, ModelsChanged, Observer, Observers


class Studio:
    """Fine-tuning jobs (`jobs`), datasets (`data`), the engine (`engine`), side-by-side
    replies (`compare`), evaluations (`evaluation`), blind votes
    (`arena`), who holds the GPUs (`gpu_use`), the API server (`serving`), models and chats,
    for any front end."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.observers = Observers()
        self.engine = EngineDesk(services.engines, self.observers)
        self.data = DataDesk(services, self.engine)
        self.jobs = JobDesk(services, self.observers, self.data)
        self.arena = ArenaDesk(services)
        self.compare = CompareDesk(self.engine)
        self.evaluation = EvalDesk(self.jobs, self.compare)
        self.models = ModelDesk(services, self.observers, self.arena, self.jobs)
        self.gpu_use = GpuUseDesk(services.processes, self.observers)
        self.serving = ServeDesk(services, self.engine, self.observers)

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Receive every studio event; returns the function that stops it."""
        return self.observers.subscribe(observer)

    # -- models -------------------------------------------------------------------------------

    def provision_default(self, progress: Progress) -> bool:
        """Provision the built-in default model if it is missing (first launch); True if it
        had to be. Blocks for the conversion (about 30 s on 2 cores)."""
        registry = self.services.registry
        default = self.services.settings.default_model
        if not default or registry.builtin_ready(default):
            return False
        registry.pull(default, progress=progress)
        self.observers.publish(ModelsChanged())
        self.observers.publish(ActiveModelChanged(registry.active_name))
        return True

    async def use_as_backend(self, name: str) -> SwitchResult:
        """设为后端: make a finished job's adapter (or any registered model) the chat's model.

        The adapter is registered as `sage-finetuned-<task_id>`, then the engine switches to
        it; the active model changes only when that switch succeeded.
        """
        model = await asyncio.to_thread(self.jobs.adapter_for_use, name)
        return await self.engine.switch(model)

    def use_without_engine(self, name: str) -> ModelRecord:
        """The same for a front end that runs no engine (the CLI's `use`): the model becomes
        active for the next engine that starts."""
        model = self.jobs.adapter_for_use(name)
        registry = self.services.registry
        record = registry.set_active(model, self.services.engines.engine_kind)
        self.observers.publish(ActiveModelChanged(record.name))
        return record

    # -- chat ---------------------------------------------------------------------------------

    def chat(self) -> ChatSession:
        """A new chat session (saved conversations, replies from the engine desk)."""
        return ChatSession(ConversationStore(self.services.store), self.engine.reply)

    def compare_session(self) -> CompareSession:
        """A new compare-mode session (2-4 models of one base side by side, or blind A/B)."""
        return CompareSession(self.compare, ConversationStore(self.services.store), self.arena)

    async def shutdown(self) -> None:
        """Stop the API server and the engine (its memory is freed); jobs keep running in
        their own processes."""
        await self.serving.stop()
        await self.engine.shutdown()
