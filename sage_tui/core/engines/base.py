"""The engine contract: what the manager asks of an inference engine, and what it gets back.

An engine serves one base model with any number of LoRA adapters chosen per request. Two
implementations exist: vLLM (`vllm_engine.py`) and transformers + peft (`hf_engine.py`, for hosts
without vLLM). The manager (`manager.py`) owns their lifecycle; nothing else starts or stops one.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sage_tui.errors import SageError

Message = dict[str, str]
"""A chat message: {"role": "system" | "user" | "assistant", "content": "..."}."""


MAX_STOPS = 4
"""Stop texts one request may give (the OpenAI API's limit)."""


@dataclass(frozen=True)
class Sampling:
    """How to sample a reply."""

    # Lower than the usual 0.7: small models (the built-in one) ramble at higher temperatures.
    temperature: float = 0.3
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()
    """Texts that end the reply where they first appear (not included in it); at most 4."""

    def check(self) -> Sampling:
        """Raise SageError naming the first value out of range; return self."""
        if not 0.0 <= self.temperature <= 2.0:
            raise SageError(f"temperature {self.temperature} is outside 0..2")
        if not 0.0 < self.top_p <= 1.0:
            raise SageError(f"top-p {self.top_p} is outside (0, 1]")
        if self.max_tokens < 1:
            raise SageError(f"max tokens {self.max_tokens} must be at least 1")
        if len(self.stop) > MAX_STOPS:
            raise SageError(f"{len(self.stop)} stop texts given; at most {MAX_STOPS} are taken")
        if any(not text for text in self.stop):
            raise SageError("a stop text is empty: give at least one character")
        return self


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter as an engine sees it: a folder, its rank, and a unique numeric id.

    The id changes whenever the adapter's weights change, so a re-trained adapter never hits
    cache entries of its previous weights.
    """

    name: str
    path: str
    rank: int
    lora_id: int


@dataclass(frozen=True)
class EngineConfig:
    """Everything needed to start an engine on one base model."""

    model_name: str
    model_path: str
    max_model_len: int
    max_lora_rank: int
    max_loras: int = 4
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    """vLLM's share of total GPU memory; None on CPU."""
    cpu_kv_cache_gib: int | None = None
    """KV cache size on CPU (vLLM's VLLM_CPU_KVCACHE_SPACE); None on GPU."""
    gpu_indices: tuple[int, ...] = ()
    """GPUs to run on (NVML numbering); empty means CPU, or whatever CUDA shows."""
    cuda_visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES for the engine's child on `gpu_indices`, in the user's terms (their
    GPU UUIDs or MIG ids untouched); None: the indices as numbers."""
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Delta:
    """New text of a reply and how many tokens it took."""

    text: str
    tokens: int
    finish_reason: str | None = None
    """Set on the last delta: "stop", "length" or "abort"."""


@dataclass(frozen=True)
class ReferenceScore:
    """How likely a model finds a reference reply: teacher-forced, not generated."""

    loss: float
    """Mean negative log-likelihood per reference token, in nats."""
    tokens: int
    """Reference tokens scored: the reply's own and the end-of-turn token after it."""


class EngineError(SageError):
    """An engine failed to start or to answer."""


class Engine(abc.ABC):
    """One running base model. Methods are called from the event loop; heavy work inside them
    runs in threads or in the engine's own process."""

    kind: str = ""
    """"vllm" or "transformers"."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.reply_threads: Callable[[], int | None] = lambda: None
        """CPU threads a reply may use now (None: all); an engine computing in this process
        applies it per reply, so a training job on the same CPU keeps its share."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model; raise EngineError with the reason if it cannot be loaded."""

    @abc.abstractmethod
    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of `messages` through the model's chat template, ready for a reply."""

    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain `text` (no chat template), for a completion prompt.

        Not abstract: an engine without a tokenizer of its own says so.
        """
        raise EngineError(f"the {self.kind or 'current'} engine cannot take a plain prompt")

    @abc.abstractmethod
    def stream(
        self, prompt_ids: list[int], sampling: Sampling, adapter: Adapter | None, request_id: str
    ) -> AsyncIterator[Delta]:
        """Generate a reply to `prompt_ids`, yielding text as it is produced."""

    async def score_reference(
        self, messages: Sequence[Message], reference: str, adapter: Adapter | None
    ) -> ReferenceScore:
        """The mean negative log-likelihood of `reference` as the assistant's reply to
        `messages` under the base model (`adapter` None) or the adapter.

        The reply is rendered with the chat template as the assistant turn; the scored span is
        the tokens after the reply prompt up to and including the end-of-turn token (see
        `reference_score.reference_span`). Not abstract: an engine that cannot score says so.
        """
        raise EngineError(f"the {self.kind or 'current'} engine cannot score a reference reply")

    @abc.abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop reply `request_id`; its stream ends with finish_reason "abort"."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop the engine and free its memory (GPU memory included)."""

    def failure(self) -> str | None:
        """Why the engine can no longer serve (its process died), or None while it can.

        Cheap: the manager asks about once a second. Engines inside this process cannot die on
        their own, so the default is None.
        """
        return None
