"""Serving the studio's models to other programs: the use cases behind the OpenAI-compatible
API, shared by `sage-tui serve` and the TUI's toggle.

The API answers with the studio's one engine: the base model it serves and every registered
adapter of that base, chosen per request (no reload). A model on another base is not served
(a request for it is refused with the models that are), so no API client can switch the
engine under the TUI's chat. The server itself (FastAPI + uvicorn, `sage_tui.api`) is built by
the factory the composition root puts in `Services.api_server`; this desk starts and stops
it, keeps `server.json` and `active_model.json` telling other programs where it is, and counts
and records what it served.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from sage_tui.core.api_key import api_key, save_key
from sage_tui.core.api_requests import record_request
from sage_tui.core.chat import stats_figures
from sage_tui.core.engines.base import Message, Sampling
from sage_tui.core.engines.reply import Reply, ReplyStats
from sage_tui.core.server_file import ServerInfo, refuse_second_server, remove_server, write_server
from sage_tui.core.store import ModelRecord
from sage_tui.errors import SageError, describe_error
from sage_tui.paths import Paths
from sage_tui.services import Services
from sage_tui.studio.engine import EngineDesk
from sage_tui.studio.state import (
    ActiveModelChanged,
    Observers,
    ServerChanged,
    ServerState,
    StudioEvent,
)

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8765


class NotServed(SageError):
    """A request named a model the server does not serve; the message lists those it does."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        listed = ", ".join(available) or "none (no model is active)"
        super().__init__(f"the model {name!r} is not served here; available: {listed}")
        self.available = list(available)


class ApiServer(Protocol):
    """What the desk needs of a server (`sage_tui.api.server.ApiServer`)."""

    port: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ServeDesk:
    """The API server's use cases: which models it serves, answering, starting, stopping."""

    def __init__(self, services: Services, engine: EngineDesk, observers: Observers) -> None:
        self._services = services
        self._engine = engine
        self._observers = observers
        self._server: ApiServer | None = None
        self._info: ServerInfo | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self.state = ServerState()
        observers.subscribe(self._event)

    @property
    def paths(self) -> Paths:
        return self._services.settings.paths

    # -- what is served -----------------------------------------------------------------------

    def served_base(self) -> ModelRecord | None:
        """The base model the engine serves, or the active model's base before it loads."""
        manager = self._engine.manager
        if manager.loaded_base is not None:
            return manager.loaded_base
        current = manager.current_model
        return self._engine.registry.base_of(current) if current is not None else None

    def models(self) -> list[ModelRecord]:
        """The served base model and its registered adapters (reads the database)."""
        base = self.served_base()
        if base is None:
            return []
        return [base, *self._engine.registry.adapters_of(base.name)]

    def resolve(self, name: str) -> ModelRecord:
        """The served model called `name`; NotServed listing the served ones otherwise."""
        models = self.models()
        for record in models:
            if record.name == name:
                return record
        raise NotServed(name, [record.name for record in models])

    # -- answering ----------------------------------------------------------------------------

    async def reply(self, messages: Sequence[Message], sampling: Sampling, model: str) -> Reply:
        return await self._engine.reply(messages, sampling, model=model)

    async def complete(self, prompt: str, sampling: Sampling, model: str) -> Reply:
        return await self._engine.complete(prompt, sampling, model=model)

    async def served(
        self, model: str, route: str, status: int, stats: ReplyStats | None = None
    ) -> None:
        """Count and record one request answered (`stats`: its reply's, when there was one)."""
        figures = stats_figures(stats) if stats is not None else None
        await asyncio.to_thread(record_request, self._services.store, model, route, status, figures)
        self._set(
            replace(
                self.state,
                requests=self.state.requests + 1,
                errors=self.state.errors + (status >= 400),
            )
        )

    # -- the server ---------------------------------------------------------------------------

    def key(self) -> str:
        """The API key (made and stored on first use); blocks on the key file."""
        return api_key(self.paths)

    async def start(
        self,
        host: str = LOOPBACK,
        port: int = DEFAULT_PORT,
        *,
        key: str | None = None,
        front: str = "tui",
    ) -> ServerState:
        """Start serving on `host:port` (port 0: any free one); `key` replaces the stored one.

        SageError when this front end cannot serve, another process serves this home already,
        no model is active, or the port is taken.
        """
        if self._server is not None:
            return self.state
        try:
            factory = self._services.api_server
            if factory is None:
                raise SageError("this front end cannot serve the API")
            await asyncio.to_thread(refuse_second_server, self.paths)
            secret = await asyncio.to_thread(
                (lambda: save_key(self.paths, key)) if key is not None else self.key
            )
            base = await asyncio.to_thread(self.served_base)
            if base is None:
                raise SageError("no model is active: choose one on the Models screen first")
            server = factory(self, host, port, secret)
            await server.start()
        except Exception as err:  # said in the state too, whatever it was (a full disk)
            self._set(ServerState(error=describe_error(err)))
            raise
        key_file = str(self.paths.api_key_file)
        info = ServerInfo(host, server.port, os.getpid(), time.time(), base.name, key_file, front)
        self._server, self._info = server, info
        await asyncio.to_thread(self._announce, info)
        self._set(ServerState(True, info.url, base.name, key_file=info.key_file))
        return self.state

    async def stop(self) -> None:
        """Stop serving (requests in flight are answered first, briefly)."""
        server, self._server, self._info = self._server, None, None
        if server is None:
            return
        try:
            await server.stop()
        finally:
            await asyncio.to_thread(self._announce, None)
            self._set(ServerState())

    def _announce(self, info: ServerInfo | None) -> None:
        """Tell other programs where the server is (server.json, active_model.json)."""
        if info is None:
            remove_server(self.paths, os.getpid())
        else:
            write_server(self.paths, info)
        self._services.registry.refresh_active_file()

    def _event(self, event: StudioEvent) -> None:
        # The chat's model moved to another base: the server serves that base now.
        if not isinstance(event, ActiveModelChanged) or self._info is None:
            return
        base = self.served_base()
        if base is None or base.name == self._info.base_model:
            return
        self._info = replace(self._info, base_model=base.name)
        self._set(replace(self.state, base_model=base.name))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._announce(self._info)
            return
        done = loop.run_in_executor(None, self._announce, self._info)
        self._pending.add(done)
        done.add_done_callback(self._pending.discard)

    def _set(self, state: ServerState) -> None:
        self.state = state
        self._observers.publish(ServerChanged(state))
