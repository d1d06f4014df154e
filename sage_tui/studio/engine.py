"""Engine use cases: start the engine for the active model, switch model, reply, notice death.

:class:`EngineDesk` owns the :class:`EngineStatus` every front end shows and publishes each
change. All methods run on one asyncio event loop (the App's, or `asyncio.run` in the CLI).

- The active model changes only when a switch succeeded: a failed switch leaves the database,
  `active_model.json` and the status naming what the engine really serves.
- Switches are serialised, never cancelled half-way: two quick switches load one after the
  other, so two engines never load onto one GPU.
- Any failure, not only the studio's own errors, ends in `failed` with the reason.
- An engine whose process died is noticed (:meth:`check_health`, about once a second, and on
  the next reply): the status says "engine stopped: <reason>" and the next message, or
  :meth:`reload`, loads it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from sage_tui.core.engines.base import Message, ReferenceScore, Sampling
from sage_tui.core.engines.manager import EngineManager, EngineStopped, SwitchResult
from sage_tui.core.engines.reply import Reply
from sage_tui.errors import describe_error
from sage_tui.studio.state import (
    ActiveModelChanged,
    EngineChanged,
    EngineState,
    EngineStatus,
    ModelsChanged,
    Observers,
)

T = TypeVar("T")


class EngineDesk:
    """The engine as the studio's front ends use it."""

    def __init__(self, manager: EngineManager, observers: Observers) -> None:
        self.manager = manager
        self.registry = manager.registry
        self._observers = observers
        self.status = EngineStatus()
        self._loads_waiting = 0
        """Loads asked for and not finished: only the last one to finish reports "ready"."""
        manager.on_status = self._detail

    # -- state --------------------------------------------------------------------------------

    def _set(self, state: EngineState, *, model: str | None, error: str | None = None) -> None:
        self.status = EngineStatus(state, model, "", time.monotonic(), error)
        self._observers.publish(EngineChanged(self.status))

    def _detail(self, line: str) -> None:
        # The manager says what it is doing ("loading ...", "" when done).
        if self.status.state is EngineState.LOADING and line:
            self.status = replace(self.status, detail=line)
            self._observers.publish(EngineChanged(self.status))

    @property
    def active_model(self) -> str | None:
        return self.registry.active_name

    # -- loading and switching ----------------------------------------------------------------

    async def start(self, name: str | None = None, *, raise_errors: bool = False) -> None:
        """Load the engine for `name` (default: the active model) without making it active.

        Idle when no model is active. A failed load ends in `failed` with the reason; it is
        raised too with `raise_errors` (the CLI wants it, the TUI shows the status).
        """
        if name is None:
            name = await asyncio.to_thread(lambda: self.registry.active_name)
        if name is None:
            self._set(EngineState.IDLE, model=None)
            return
        await self._load(name, switch=False, raise_errors=raise_errors)

    async def reload(self) -> None:
        """Load the active model again (after the engine stopped or failed)."""
        await self.manager.drop_dead_engine()
        await self.start()

    async def switch(self, name: str) -> SwitchResult:
        """Make `name` the chat's model, loading its base model if needed.

        SwitchFailed (or another SageError) with the reason; the active model is unchanged
        then, and the status says whether the previous model still serves.
        """
        result = await self._load(name, switch=True, raise_errors=True)
        assert result is not None
        return result

    async def _load(
        self, name: str, *, switch: bool, raise_errors: bool = False
    ) -> SwitchResult | None:
        self._set(EngineState.LOADING, model=name)
        self._loads_waiting += 1
        try:
            if switch:
                result = await self.manager.switch_model(name)
            else:
                await self.manager.ensure_loaded(name)
                result = None
        except Exception as err:  # anything ends in a state, never in "loading"
            if self._loads_waiting == 1:  # else a later load is under way and will report
                if self.manager.loaded_base is not None:
                    # A failed switch rolled back: the previous model still serves.
                    self._set(EngineState.READY, model=self.active_model, error=describe_error(err))
                else:
                    self._set(EngineState.FAILED, model=name, error=describe_error(err))
            if raise_errors:
                raise
            return None
        finally:
            self._loads_waiting -= 1
        if not self._loads_waiting:
            self._set(EngineState.READY, model=name)
        if switch:
            self._observers.publish(ActiveModelChanged(self.active_model))
            self._observers.publish(ModelsChanged())
        return result

    async def shutdown(self) -> None:
        """Stop the engine, freeing its memory (the studio is exiting)."""
        await self.manager.shutdown()

    # -- health -------------------------------------------------------------------------------

    async def check_health(self) -> str | None:
        """Notice an engine that died; returns the reason once, when it is first noticed."""
        if self.status.state is not EngineState.READY or self.manager.engine_failure() is None:
            return None
        reason = await self.manager.drop_dead_engine()
        if reason is not None:
            self._set(EngineState.STOPPED, model=self.status.model, error=reason)
        return reason

    # -- replies ------------------------------------------------------------------------------

    async def reply(
        self, messages: Sequence[Message], sampling: Sampling, *, model: str | None = None
    ) -> Reply:
        """Start a reply from `model` (default: the active one); a stopped engine is loaded
        again first. EngineStopped when the engine died under the request."""
        return await self._answering(lambda: self.manager.generate(messages, sampling, model=model))

    async def complete(self, prompt: str, sampling: Sampling, *, model: str | None = None) -> Reply:
        """Start a plain-text continuation of `prompt` (no chat template), as :meth:`reply`."""
        return await self._answering(lambda: self.manager.complete(prompt, sampling, model=model))

    async def score_reference(
        self, messages: Sequence[Message], reference: str, *, model: str | None = None
    ) -> ReferenceScore:
        """How likely `model` finds `reference` as its reply to `messages` (mean NLL per
        token); a stopped engine is loaded again first, as for a reply."""
        return await self._answering(
            lambda: self.manager.score_reference(messages, reference, model=model)
        )

    async def _answering(self, ask: Callable[[], Awaitable[T]]) -> T:
        """`ask()` of an engine that serves: a stopped or failed one is loaded again first,
        and one that dies under the request is noticed before EngineStopped goes on."""
        await self.check_health()  # one that died since anyone looked (a reply streaming)
        if self.status.state in (EngineState.STOPPED, EngineState.FAILED):
            await self.reload()
        try:
            return await ask()
        except EngineStopped:
            await self.check_health()
            raise
