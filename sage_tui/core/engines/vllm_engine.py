"""The vLLM engine: `AsyncLLM` (V1) in this process, its EngineCore in a child process.

The child owns the model's memory, so `shutdown()` really frees it (vLLM's in-process teardown
does not). Construction takes 15 s or more and runs in a thread; streaming runs on the caller's
event loop with delta outputs. LoRA adapters are chosen per request (`LoRARequest`), so
switching between adapters of the loaded base model needs no reload.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sage_tui.core.child_env import loopback_collectives, temporary_environ
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
from sage_tui.core.engines.request_gate import RequestGate
from sage_tui.errors import one_line

_score_ids = itertools.count(1)


class VllmEngine(Engine):
    """A base model served by vLLM, with per-request LoRA adapters."""

    kind = "vllm"

    def __init__(self, config) -> None:
        super().__init__(config)
        self._llm: Any = None
        self._tokenizer: Any = None
        self._end_ids: set[int] = set()
        self._gate = RequestGate()

    async def start(self) -> None:
        """Build the engine in a thread; the EngineCore child loads the weights."""
        try:
            self._llm = await asyncio.to_thread(self._build)
            self._tokenizer = self._llm.get_tokenizer()
            from sage_tui.core.engines.reference_score import end_of_turn_ids

            self._end_ids = end_of_turn_ids(self._tokenizer, self.config.model_path)
        except Exception as err:  # vLLM raises many kinds; the message is what matters
            raise EngineError(
                f"vLLM could not load {self.config.model_name} from {self.config.model_path}:"
                f" {one_line(err, last=True)}"
            ) from err

    def _build(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        c = self.config
        args = AsyncEngineArgs(
            model=c.model_path,
            tokenizer=c.model_path,
            served_model_name=c.model_name,
            max_model_len=c.max_model_len,
            enable_lora=True,
            max_lora_rank=c.max_lora_rank,
            max_loras=c.max_loras,
            tensor_parallel_size=c.tensor_parallel_size,
            trust_remote_code=c.trust_remote_code,
            disable_log_stats=True,
            **(
                {"gpu_memory_utilization": c.gpu_memory_utilization}
                if c.gpu_memory_utilization is not None
                else {}
            ),
            **c.extra,
        )
        # vLLM starts its EngineCore child from os.environ and has no way to take another
        # environment, so the child's variables are there only while it is being started.
        with temporary_environ(child_environ(c)):
            return AsyncLLM.from_engine_args(args)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The chat template applied by the model's own tokenizer."""
        if not getattr(self._tokenizer, "chat_template", None):
            raise EngineError(f"{self.config.model_name} has no chat template")
        ids = self._tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def text_ids(self, text: str) -> list[int]:
        """Plain text through the tokenizer, with the special tokens it adds (as vLLM's own
        completions endpoint does)."""
        return list(self._tokenizer.encode(text))

    async def stream(
        self, prompt_ids: list[int], sampling: Sampling, adapter: Adapter | None, request_id: str
    ) -> AsyncIterator[Delta]:
        """Stream the reply; cancelling the consumer aborts the request inside vLLM."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            output_kind=RequestOutputKind.DELTA,
        )
        lora = _lora(adapter)
        finish: str | None = None
        async with self._gate.shared():
            async for output in self._llm.generate(
                {"prompt_token_ids": prompt_ids}, params, request_id, lora_request=lora
            ):
                piece = output.outputs[0]
                finish = piece.finish_reason
                if output.finished and finish is None:
                    finish = "abort"
                if piece.text or piece.token_ids or output.finished:
                    yield Delta(
                        piece.text, len(piece.token_ids), finish if output.finished else None
                    )
                if output.finished:
                    return
        # The generator ends without a finished output when the request was aborted.
        yield Delta("", 0, "abort")

    async def score_reference(
        self, messages: Sequence[Message], reference: str, adapter: Adapter | None
    ) -> ReferenceScore:
        """Teacher-forced: the conversation and the reference go in as one prompt, and vLLM
        returns each prompt token's log-probability (`prompt_logprobs=0`: the token's own,
        no alternatives); one token is sampled and thrown away.

        It runs alone in the engine (`request_gate`). vLLM skips its prefix cache for it (the
        logprobs need the whole prefill). In vLLM up to at least 0.32 an adapter's `lm_head`
        delta is left out of prompt logprobs (vllm#51594): the studio's adapters train every
        linear layer but lm_head, so their scores are whole.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        from sage_tui.core.engines.reference_score import check_fits, from_logprobs, reference_span

        if self._llm is None:
            raise EngineError(f"the engine for {self.config.model_name} is not started")
        ids, start, end = await asyncio.to_thread(
            reference_span,
            self._tokenizer,
            messages,
            reference,
            self._end_ids,
            self.config.model_name,
        )
        check_fits(len(ids), self.config.max_model_len, self.config.model_name)
        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=0,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        async with self._gate.alone():  # see request_gate: batched, it kills the EngineCore
            async for output in self._llm.generate(
                {"prompt_token_ids": ids},
                params,
                f"score-{next(_score_ids)}",
                lora_request=_lora(adapter),
            ):
                final = output
        logprobs = final.prompt_logprobs if final is not None else None
        if not logprobs or len(logprobs) < end:
            raise EngineError("vLLM returned no log-probabilities for the reference")
        return from_logprobs([logprobs[i][ids[i]].logprob for i in range(start, end)])

    async def abort(self, request_id: str) -> None:
        """Abort one request; its stream ends."""
        if self._llm is not None:
            await self._llm.abort(request_id)

    def failure(self) -> str | None:
        """Why vLLM can no longer serve: its EngineCore process died (killed, OOM, crashed)."""
        llm = self._llm
        if llm is None or not getattr(llm, "errored", False):
            return None
        return "its EngineCore process " + _exit_description(llm)

    async def shutdown(self) -> None:
        """End the EngineCore child process, which frees the model's memory."""
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)
            # AsyncLLM.__del__ calls shutdown() again, at interpreter exit if a reference
            # lingers, when vLLM's module globals are gone ("'NoneType' object is not
            # callable"). It is already shut down: make the second call do nothing.
            llm.shutdown = lambda *args, **kwargs: None


def _lora(adapter: Adapter | None) -> Any:
    """The request's LoRARequest (None for the base model)."""
    if adapter is None:
        return None
    from vllm.lora.request import LoRARequest

    return LoRARequest(adapter.name, adapter.lora_id, adapter.path)


def child_environ(config: EngineConfig) -> dict[str, str]:
    """What the EngineCore child must see on top of the studio's environment: its GPUs, its
    KV cache size on CPU, and on a CPU-only host its share of the cores (training runners get
    the rest, see `cpu_share`)."""
    from sage_tui.core.cpu_share import engine_env

    env: dict[str, str] = engine_env(gpu=bool(config.gpu_indices))
    if config.cpu_kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(config.cpu_kv_cache_gib)  # GiB
    if config.tensor_parallel_size > 1:
        # vLLM's workers meet through a FileStore; their NCCL/gloo sockets stay on loopback.
        env.update(loopback_collectives(os.environ))
    if config.gpu_indices:
        # The planner picked these GPUs (NVML numbers); the user's UUIDs pass through as they
        # are, numbers mean NVML's order.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = config.cuda_visible_devices or ",".join(
            map(str, config.gpu_indices)
        )
    return env


def _exit_description(llm: Any) -> str:
    """How the EngineCore child ended, as far as vLLM lets us see it."""
    manager = getattr(
        getattr(getattr(llm, "engine_core", None), "resources", None), "engine_manager", None
    )
    codes = [getattr(p, "exitcode", None) for p in getattr(manager, "processes", None) or ()]
    code = next((c for c in codes if c is not None), None)
    if code is None:
        return "stopped answering"
    if code < 0:
        import signal

        try:
            return f"was killed ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed (signal {-code})"
    return f"exited with code {code}"
