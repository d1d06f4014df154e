"""A scripted inference engine for fast, deterministic UI and lifecycle tests.

It implements the real `Engine` contract, so the real EngineManager, the studio and the App run
over it unchanged; only the model is fake. What a real engine cannot be made to do on demand
(load slowly, fail to load with any exception, die mid-reply like an OOM-killed EngineCore) the
script sets. `FakeEngines` is the factory handed to `open_services(engine_factory=...)`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sage_tui.core.engines.base import (
    Adapter,
    Delta,
    Engine,
    EngineConfig,
    EngineError,
    Message,
    ReferenceScore,
    Sampling,
)


@dataclass
class EngineScript:
    """What the fake engines do; tests change it between steps."""

    load_seconds: float = 0.0
    load_error: BaseException | None = None
    failing_models: set[str] | None = None
    """Models `load_error` applies to (None: every model)."""
    reply: str = "The capital of France is Paris."
    """Sent one word a token; an adapter's reply is prefixed with the adapter's name."""
    token_seconds: float = 0.0
    die_after_tokens: int | None = None
    """The engine dies (as a killed EngineCore would) after this many tokens of a reply."""
    live: int = 0
    """Engines started and not shut down."""
    most_live: int = 0
    """The most engines alive at once (two loading onto one GPU shows here)."""
    base_loss: float = 2.0
    """A reference's mean NLL under the base model; under an adapter it is half that."""
    failing_scores: set[str] = field(default_factory=set)
    """Models (adapter names, or the base's) whose reference scoring fails."""
    scored: list[str | None] = field(default_factory=list)
    """The adapter (None: the base) of each reference scored."""
    started: list[str] = field(default_factory=list)
    prompts: list[list[Message]] = field(default_factory=list)
    adapters: list[str | None] = field(default_factory=list)
    samplings: list[Sampling] = field(default_factory=list)
    """The sampling of each reply, in order."""


class FakeEngine(Engine):
    kind = "fake"

    def __init__(self, config: EngineConfig, script: EngineScript) -> None:
        super().__init__(config)
        self.script = script
        self.dead: str | None = None
        self._running = False
        self._aborted: set[str] = set()

    async def start(self) -> None:
        script = self.script
        script.live += 1
        script.most_live = max(script.most_live, script.live)
        self._running = True
        try:
            # In a thread, as vLLM builds its engine: cancelling the caller does not stop it.
            await asyncio.to_thread(time.sleep, script.load_seconds)
            failing = script.failing_models
            if script.load_error is not None and (
                failing is None or self.config.model_name in failing
            ):
                raise script.load_error
        except BaseException:
            # A load that fails frees what it took, as vLLM's child process does.
            await self.shutdown()
            raise
        script.started.append(self.config.model_name)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        self.script.prompts.append(list(messages))
        return list(range(sum(len(m.get("content", "").split()) + 4 for m in messages)))

    def text_ids(self, text: str) -> list[int]:
        self.script.prompts.append([{"role": "prompt", "content": text}])
        return list(range(len(text.split())))

    async def stream(
        self, prompt_ids: list[int], sampling: Sampling, adapter: Adapter | None, request_id: str
    ) -> AsyncIterator[Delta]:
        script = self.script
        script.adapters.append(adapter.name if adapter else None)
        script.samplings.append(sampling)
        words = script.reply.split(" ")
        if adapter is not None:
            words = [f"[{adapter.name}]", *words]
        words = words[: sampling.max_tokens]
        for count, word in enumerate(words, start=1):
            if count == 1 and adapter is not None and not Path(adapter.path).is_dir():
                # vLLM reads an adapter's weights when its first request is scheduled: a
                # folder gone by then fails the request with vLLM's own words.
                raise RuntimeError(
                    f"Loading lora {adapter.name} failed: No adapter found for {adapter.path}"
                )
            if self.dead:
                raise RuntimeError("EngineDeadError: the engine core died")
            if request_id in self._aborted:
                yield Delta("", 0, "abort")
                return
            await asyncio.sleep(script.token_seconds)
            last = count == len(words)
            yield Delta(word + ("" if last else " "), 1, "stop" if last else None)
            if script.die_after_tokens is not None and count >= script.die_after_tokens:
                self.dead = "its EngineCore process was killed (SIGKILL)"

    async def score_reference(
        self, messages: Sequence[Message], reference: str, adapter: Adapter | None
    ) -> ReferenceScore:
        """A fixed figure: `base_loss` for the base, half of it for an adapter; one token a
        word of the reference, and the end of the turn."""
        script = self.script
        script.scored.append(adapter.name if adapter else None)
        await asyncio.sleep(script.token_seconds)
        if self.dead:
            raise RuntimeError("EngineDeadError: the engine core died")
        if (adapter.name if adapter else self.config.model_name) in script.failing_scores:
            raise EngineError("scoring the reference failed: scripted")
        loss = script.base_loss / (2 if adapter is not None else 1)
        return ReferenceScore(loss, len(reference.split()) + 1)

    async def abort(self, request_id: str) -> None:
        self._aborted.add(request_id)

    async def shutdown(self) -> None:
        if self._running:
            self._running = False
            self.script.live -= 1

    def failure(self) -> str | None:
        return self.dead


class FakeEngines:
    """The engine factory: builds FakeEngines that share one script."""

    def __init__(self, script: EngineScript | None = None) -> None:
        self.script = script or EngineScript()
        self.engines: list[FakeEngine] = []

    def __call__(self, kind: str, config: EngineConfig) -> FakeEngine:
        engine = FakeEngine(config, self.script)
        self.engines.append(engine)
        return engine

    @property
    def current(self) -> FakeEngine:
        return self.engines[-1]


def adapter_folder(path: Path, rank: int = 8) -> Path:
    """A LoRA adapter folder the registry accepts, for the fake engine (which never reads the
    weights): a real adapter_config.json and a placeholder weights file."""
    import json

    path.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "bias": "none"}
    (path / "adapter_config.json").write_text(json.dumps(config))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path
