"""The engine manager: the one owner of the inference engine's lifecycle.

SAGE's `vllm_registry` done properly. It knows which model is active, keeps one engine running
for that model's base, and answers chat requests with it:

- switching to another adapter of the loaded base model is instant (adapters go per request);
- switching base model shuts the old engine down, checks on GPU hosts that its memory came
  back, loads the new one, and if that fails loads the previous model again and says why;
- switches are serialised, and replies still streaming from an engine that is being replaced
  end cleanly with finish reason "abort".

All methods run on one asyncio event loop (the App's, or `asyncio.run` in the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sage_tui.core.cpu_share import engine_threads
from sage_tui.core.engines.adapter_ids import AdapterIds
from sage_tui.core.engines.base import (
    Adapter,
    Engine,
    EngineConfig,
    Message,
    ReferenceScore,
    Sampling,
)
from sage_tui.core.engines.context import fit_context, fit_reply
from sage_tui.core.engines.engine_setup import check_folder, planned_config
from sage_tui.core.engines.kinds import default_engine_factory, resolve_engine_kind
from sage_tui.core.engines.memory_return import wait_for_memory_return
from sage_tui.core.engines.plan import Hardware, ModelShape
from sage_tui.core.engines.reply import Reply, ReplyStats, stream_reply
from sage_tui.core.engines.request_failure import EngineStopped as EngineStopped  # re-exported
from sage_tui.core.engines.request_failure import request_failure
from sage_tui.core.models.registry import ModelRegistry
from sage_tui.core.runtime_tuning import engine_starting
from sage_tui.core.store import ModelRecord
from sage_tui.errors import SageError, describe_error

EngineFactory = Callable[[str, EngineConfig], Engine]
HardwareProbe = Callable[[], Hardware]
StatusCallback = Callable[[str], None]

# How long to wait for a stopped engine's GPU memory to show up as free again.
MEMORY_RETURN_SECONDS = 20.0
MEMORY_RETURN_TOLERANCE = 512 * 1024**2


class SwitchFailed(SageError):
    """A model could not be loaded; the message says why and what is loaded instead."""


@dataclass(frozen=True)
class SwitchResult:
    """What a switch did."""

    model: ModelRecord
    reloaded: bool
    """False when only the adapter changed (no engine reload)."""
    seconds: float


class EngineManager:
    """Owns the engine: which base model it runs, switching, and generating replies."""

    def __init__(
        self,
        registry: ModelRegistry,
        hardware: HardwareProbe,
        *,
        engine_kind: str = "auto",
        engine_factory: EngineFactory = default_engine_factory,
        on_status: StatusCallback | None = None,
        max_model_len: int | None = None,
    ) -> None:
        self.registry = registry
        self.engine_kind = resolve_engine_kind(engine_kind)
        self._factory = engine_factory
        self._hardware = hardware
        self.on_status: StatusCallback = on_status or (lambda _: None)
        """Told what the engine is doing ("loading ...", "" when done); the UI sets it."""
        self._max_model_len = max_model_len
        self._engine: Engine | None = None
        self._base: ModelRecord | None = None
        self._lock = asyncio.Lock()
        self._replies: dict[str, Engine] = {}
        self._adapters = AdapterIds()
        self._request_ids = itertools.count(1)
        self._starting: EngineConfig | None = None
        self.cpu_jobs_running = False
        """Whether training jobs compute on this host's CPU (the studio keeps it current): an
        engine in this process then keeps to its share of the cores."""
        self.loads = 0
        """How many times an engine was built (tests and benchmarks read it)."""

    # -- what is loaded -----------------------------------------------------------------------

    @property
    def current_model(self) -> ModelRecord | None:
        """The active model (base or adapter), as registered."""
        name = self.registry.active_name
        return self.registry.store.get_model(name) if name else None

    @property
    def loaded_base(self) -> ModelRecord | None:
        """The base model the running engine serves, if one runs."""
        return self._base if self._engine is not None else None

    @property
    def engine_on_cpu(self) -> bool:
        """Whether an engine computes on this host's CPU now (running or being started)."""
        config = self._starting or (self._engine.config if self._engine is not None else None)
        return config is not None and not config.gpu_indices

    @property
    def engine_config(self) -> EngineConfig | None:
        """Settings of the running engine."""
        return self._engine.config if self._engine is not None else None

    # -- registering and switching --------------------------------------------------------------

    def register_model(
        self, name: str, path: str | Path, config: dict | None = None, base_model: str | None = None
    ) -> ModelRecord:
        """Register a base model folder, or an adapter folder when `base_model` is given."""
        if base_model is not None:
            return self.registry.register_adapter(name, Path(path), base_model)
        return self.registry.import_model(str(path), name=name)

    async def switch_model(self, name: str) -> SwitchResult:
        """Make `name` the active model, loading its base model if it is not the one running."""
        started = time.monotonic()
        record = self.registry.get(name)
        async with self._lock:
            base = self.registry.base_of(record)
            reloaded = await self._ensure_base(base, record)
            # The database and active_model.json are written off the event loop.
            await asyncio.to_thread(self.registry.set_active, name, self.engine_kind)
        self.on_status("")
        return SwitchResult(record, reloaded, time.monotonic() - started)

    async def ensure_loaded(self, name: str | None = None) -> ModelRecord | None:
        """Have an engine that serves `name` (default: the active model) without making it
        the active model. Returns the model, or None when there is no active model."""
        record = self.registry.get(name) if name else self.current_model
        if record is None:
            return None
        async with self._lock:
            await self._ensure_base(self.registry.base_of(record), record)
        self.on_status("")
        return record

    async def _ensure_base(self, base: ModelRecord, wanted: ModelRecord) -> bool:
        """Have an engine for `base` able to serve `wanted`; True if one was (re)built."""
        check_folder(base)
        rank = self._adapters.adapter(wanted).rank if wanted.kind == "adapter" else 0
        running = self._engine
        if (
            running is not None
            and self._base is not None
            and self._base.name == base.name
            and rank <= running.config.max_lora_rank
        ):
            return False
        previous = self._base if running is not None else None
        if running is not None:
            await self._stop_engine(f"switching to {wanted.name}")
        try:
            await self._start_engine(base, rank)
        except Exception as err:  # any failure of a load is reported, never left loading
            why = describe_error(err)
            if previous is None:
                self.on_status(f"failed: {why}")
                raise SwitchFailed(f"could not load {base.name}: {why}") from err
            self.on_status(f"{base.name} failed; loading {previous.name} again")
            try:
                await self._start_engine(previous, 0)
            except Exception as again:
                self.on_status(f"failed: {describe_error(again)}")
                raise SwitchFailed(
                    f"could not load {base.name} ({why}), nor {previous.name} again"
                    f" ({describe_error(again)})"
                ) from err
            raise SwitchFailed(
                f"could not load {base.name}: {why}; still using {previous.name}"
            ) from err
        return True

    async def _start_engine(self, base: ModelRecord, min_rank: int) -> None:
        check_folder(base)
        adapters_rank = max(
            [min_rank]
            + [int(a.config.get("rank", 0)) for a in self.registry.adapters_of(base.name)]
        )
        hardware = await asyncio.to_thread(self._hardware)
        shape = await asyncio.to_thread(ModelShape.from_folder, Path(base.path))
        plan, config = planned_config(
            base,
            shape,
            hardware,
            adapters_rank=adapters_rank,
            max_model_len=self._max_model_len,
        )
        self.on_status(f"loading {base.name} ({self.engine_kind}, {plan.device})")
        engine = self._factory(self.engine_kind, config)
        engine.reply_threads = lambda: engine_threads(
            gpu=bool(config.gpu_indices), jobs=self.cpu_jobs_running
        )
        self.loads += 1
        loading = asyncio.ensure_future(engine.start())
        self._starting = config
        try:
            # Shielded: the load runs on in its thread whatever happens to the caller, so a
            # cancelled switch must wait for it and tear it down, or two engines would end
            # up holding memory on the same GPU.
            with engine_starting():  # no full GC walks while it imports and builds
                await asyncio.shield(loading)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await loading
            with contextlib.suppress(Exception):
                await engine.shutdown()
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await engine.shutdown()  # whatever a failed load left behind
            raise
        finally:
            self._starting = None
        self._engine, self._base = engine, base

    async def _stop_engine(self, why: str) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        self.on_status(f"stopping {engine.config.model_name} ({why})")
        for request_id, owner in list(self._replies.items()):
            if owner is engine:
                await engine.abort(request_id)
        before = await asyncio.to_thread(self._hardware) if engine.config.gpu_indices else None
        await engine.shutdown()
        if before is not None:
            await wait_for_memory_return(
                self._hardware,
                engine.config.gpu_indices,
                before,
                seconds=MEMORY_RETURN_SECONDS,
                tolerance=MEMORY_RETURN_TOLERANCE,
                on_status=self.on_status,
            )

    async def shutdown(self) -> None:
        """Stop the engine (the app is exiting)."""
        async with self._lock:
            await self._stop_engine("exit")

    def engine_failure(self) -> str | None:
        """Why the running engine died, or None while it serves (or none runs)."""
        engine = self._engine
        return engine.failure() if engine is not None else None

    async def drop_dead_engine(self) -> str | None:
        """Forget an engine that died, so the next request loads a new one; its reason.

        Replies still streaming from it end; what the dead engine left is shut down as far as
        it can be (briefly: it has no process left to wait for).
        """
        async with self._lock:
            engine = self._engine
            reason = engine.failure() if engine is not None else None
            if engine is None or reason is None:
                return None
            self._engine = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(engine.shutdown(), timeout=10)
            return reason

    # -- generating -----------------------------------------------------------------------------

    async def generate(
        self,
        messages: Sequence[Message],
        sampling: Sampling | None = None,
        *,
        model: str | None = None,
        request_id: str | None = None,
    ) -> Reply:
        """Start a reply to `messages` from `model` (default: the active model).

        The model must be the loaded base or one of its adapters; an adapter of another base
        is refused with both names. The conversation is trimmed oldest-first to fit the
        context; a last message that alone does not fit is refused with the limit.
        """
        sampling = (sampling or Sampling()).check()
        if not messages or not messages[-1].get("content", "").strip():
            raise SageError("the message is empty: type something to send")
        engine, record, adapter = await self._serving(model)
        prompt, sampling, trimmed = await fit_context(engine, list(messages), sampling)
        return self._reply(engine, record, adapter, prompt, sampling, request_id, trimmed)

    async def complete(
        self,
        prompt: str,
        sampling: Sampling | None = None,
        *,
        model: str | None = None,
        request_id: str | None = None,
    ) -> Reply:
        """Start a plain-text continuation of `prompt` (no chat template) from `model`.

        The same checks as a reply; a prompt that leaves no room in the context is refused.
        """
        sampling = (sampling or Sampling()).check()
        if not prompt:
            raise SageError("the prompt is empty: give some text to continue")
        engine, record, adapter = await self._serving(model)
        ids = await asyncio.to_thread(engine.text_ids, prompt)
        sampling = fit_reply(engine, ids, sampling, "prompt")
        return self._reply(engine, record, adapter, ids, sampling, request_id, 0)

    def _reply(
        self,
        engine: Engine,
        record: ModelRecord,
        adapter: Adapter | None,
        prompt: list[int],
        sampling: Sampling,
        request_id: str | None,
        trimmed: int,
    ) -> Reply:
        request_id = request_id or f"chat-{next(self._request_ids)}-{int(time.time() * 1000)}"
        stats = ReplyStats(
            model=record.name,
            engine=engine.kind,
            prompt_tokens=len(prompt),
            trimmed_messages=trimmed,
        )
        deltas = stream_reply(engine, prompt, sampling, adapter, request_id, stats, self._replies)
        return Reply(request_id, stats, deltas)

    async def score_reference(
        self, messages: Sequence[Message], reference: str, *, model: str | None = None
    ) -> ReferenceScore:
        """How likely `model` (default: the active one) finds `reference` as its reply to
        `messages`: the mean NLL per reference token (nats) and how many tokens were scored.

        The same checks as a reply (the model on the loaded base, its folder there); the
        conversation is not trimmed: one that does not fit is refused with the limit.
        """
        engine, _record, adapter = await self._serving(model)
        try:
            return await engine.score_reference(list(messages), reference, adapter)
        except Exception as err:
            raise request_failure(engine, adapter, err) from err

    async def _serving(self, model: str | None) -> tuple[Engine, ModelRecord, Adapter | None]:
        """The engine, the model's record and its adapter for a request from `model`."""
        record = self.registry.get(model) if model is not None else self.current_model
        if record is None:
            raise SageError("no model is active: choose one on the Models screen")
        if self._engine is None:
            await self.ensure_loaded()
        async with self._lock:  # wait for a switch in progress
            engine, base = self._engine, self._base
        if engine is None or base is None:
            raise SageError("no engine is running: choose a model first")
        return engine, record, self._adapters.for_request(record, base, engine.config)

    async def abort(self, request_id: str) -> None:
        """Stop a reply; its stream ends with finish reason "abort"."""
        engine = self._replies.get(request_id)
        if engine is not None:
            await engine.abort(request_id)
