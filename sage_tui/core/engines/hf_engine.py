"""The fallback engine: transformers + peft, for hosts where vLLM is not installed.

It serves one request at a time on one device, which is all a host without vLLM can afford;
LoRA adapters are loaded onto the model the first time a request names them and switched per
request, so a reply without an adapter always comes from the plain base model.

torch, transformers and peft are imported inside functions only: `sage_tui.core` must stay cheap
to import (tests/test_layering.py checks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from sage_tui.core.cpu_share import apply_engine_threads
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
from sage_tui.core.engines.hf_streaming import Post, helper_classes
from sage_tui.core.engines.reference_score import template_ids
from sage_tui.errors import one_line


class TransformersEngine(Engine):
    """One base model in this process through transformers, with peft LoRA adapters per request.

    Generation runs in a thread per request; a threading lock lets one generate() (and any
    adapter load) touch the model at a time, so further requests wait their turn.
    """

    kind = "transformers"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._eos_ids: set[int] = set()
        # Held by the generation thread for the whole of a request, and by shutdown while it
        # drops the model: a lock rather than an asyncio.Lock so a cancelled consumer cannot
        # release it while its thread still runs.
        self._lock = threading.Lock()
        self._requests: dict[str, threading.Event] = {}
        # Adapter names on the model, least recently used first, to cap them at max_loras.
        self._loaded: OrderedDict[str, str] = OrderedDict()
        self._closed = False

    async def start(self) -> None:
        """Load tokenizer and model in a worker thread; EngineError with the reason on failure."""
        if self._model is not None:
            return
        if self._closed:
            raise EngineError(f"the engine for {self.config.model_name} was shut down")
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.config.model_path
        try:
            if not Path(path).is_dir():
                raise FileNotFoundError("no such folder")
            # Checked up front: transformers' own complaint about it starts with a line about
            # the tokenizer backend, which would send the user looking in the wrong place.
            if not (Path(path) / "config.json").is_file():
                raise FileNotFoundError("no config.json, so not a model folder")
            if torch.cuda.is_available():
                device = torch.device("cuda")
                # bf16 keeps the range of the checkpoints; older GPUs without it get fp16.
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            else:
                device = torch.device("cpu")
                dtype = torch.bfloat16 if _cpu_has_bf16() else torch.float32
            trust = self.config.trust_remote_code
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust)
            model.to(device)
            model.eval()
        except Exception as exc:
            raise EngineError(
                f"cannot load {self.config.model_name} from {path}: {one_line(exc)}"
            ) from exc
        # Chat models often end a turn with a token other than the tokenizer's EOS (or the
        # other way round); stopping on either matches what vLLM does with generation_config.
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self._tokenizer, self._model, self._device, self._eos_ids = (
            tokenizer,
            model,
            device,
            eos_ids,
        )

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of `messages` through the model's chat template, ending in the reply header."""
        tokenizer = self._tokenizer
        if tokenizer is None:
            raise self._not_ready()
        if not getattr(tokenizer, "chat_template", None):
            raise EngineError(f"{self.config.model_name} has no chat template")
        try:
            return template_ids(tokenizer, messages, reply_prompt=True)
        except Exception as exc:
            raise EngineError(
                f"chat template of {self.config.model_name}: {one_line(exc)}"
            ) from exc

    def text_ids(self, text: str) -> list[int]:
        """Plain text through the tokenizer, with the special tokens it adds."""
        if self._tokenizer is None:
            raise self._not_ready()
        return list(self._tokenizer.encode(text))

    def stream(
        self, prompt_ids: list[int], sampling: Sampling, adapter: Adapter | None, request_id: str
    ) -> AsyncIterator[Delta]:
        """Generate a reply to `prompt_ids`; the last Delta carries the finish reason.

        Not an async generator itself: the request is registered here, so an abort() that comes
        before the first item is requested still ends it.
        """
        if request_id in self._requests:
            raise EngineError(f"request {request_id} is already running")
        stop = threading.Event()
        self._requests[request_id] = stop
        return self._stream(list(prompt_ids), sampling, adapter, request_id, stop)

    async def _stream(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        adapter: Adapter | None,
        request_id: str,
        stop: threading.Event,
    ) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def post(item: tuple[str, Any]) -> None:
            # RuntimeError means the loop is closed: nobody is left to read the reply.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            if self._model is None:
                raise self._not_ready()
            sampling.check()
            # A thread of its own rather than asyncio.to_thread: requests waiting for the lock
            # would otherwise fill the loop's small default executor. Not a daemon: killing
            # it inside a torch kernel at exit aborts the interpreter, and the stop event (set
            # when the generator is closed, which asyncio.run does) ends it within a token.
            threading.Thread(
                target=self._generate,
                args=(prompt_ids, sampling, adapter, stop, post),
                name=f"sage-generate-{request_id}",
            ).start()
            while True:
                kind, payload = await queue.get()
                if kind == "error":
                    raise EngineError(payload)
                yield payload
                if payload.finish_reason is not None:
                    return
        finally:
            # Reached on normal end, on error, and when the consumer closes or is cancelled:
            # in the last two cases the thread must stop spending compute on nobody.
            stop.set()
            if self._requests.get(request_id) is stop:
                del self._requests[request_id]

    def _generate(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        adapter: Adapter | None,
        stop: threading.Event,
        post: Post,
    ) -> None:
        """Body of the generation thread: waits its turn, then runs generate() to the end."""
        try:
            with self._lock:
                if stop.is_set():
                    post(("delta", Delta("", 0, "abort")))
                    return
                if self._model is None:
                    post(("error", str(self._not_ready())))
                    return
                # Torch sizes this thread's pool at its first parallel work: set it here.
                apply_engine_threads(self.reply_threads())
                self._run(prompt_ids, sampling, adapter, stop, post)
        except EngineError as exc:
            post(("error", str(exc)))
        except Exception as exc:
            post(("error", f"generation failed: {one_line(exc)}"))

    def _run(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        adapter: Adapter | None,
        stop: threading.Event,
        post: Post,
    ) -> None:
        import torch
        from transformers import StoppingCriteriaList

        model, tokenizer = self._model, self._tokenizer
        room = self.config.max_model_len - len(prompt_ids)
        if not prompt_ids:
            raise EngineError("the prompt is empty")
        if room < 1:
            raise EngineError(
                f"the prompt has {len(prompt_ids)} tokens, more than the context of "
                f"{self.config.max_model_len} allows"
            )
        max_new = min(sampling.max_tokens, room)
        self._activate(adapter)

        streamer_cls, stop_cls = helper_classes()
        streamer = streamer_cls(tokenizer, post)
        stopper = stop_cls(stop)
        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self._device)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": max_new,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([stopper]),
            "eos_token_id": sorted(self._eos_ids) or None,
            "pad_token_id": tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else next(iter(sorted(self._eos_ids)), None),
        }
        if sampling.temperature == 0:
            kwargs["do_sample"] = False
        else:
            # top_k=0 switches off transformers' default top-k of 50, which vLLM does not apply.
            kwargs.update(
                do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0
            )
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        model.generate(**kwargs)

        ids = streamer.ids
        if ids and ids[-1] in self._eos_ids:
            reason = "stop"
        elif stopper.fired:
            reason = "abort"
        elif len(ids) >= max_new:
            reason = "length"
        else:
            reason = "stop"
        streamer.finish(reason)

    async def score_reference(
        self, messages: Sequence[Message], reference: str, adapter: Adapter | None
    ) -> ReferenceScore:
        """One forward pass over the conversation and the reference, labels -100 on the
        prompt: transformers' own shifted cross-entropy is the mean NLL of the reference."""
        if self._model is None:
            raise self._not_ready()
        return await asyncio.to_thread(self._score, list(messages), reference, adapter)

    def _score(
        self, messages: list[Message], reference: str, adapter: Adapter | None
    ) -> ReferenceScore:
        import torch

        from sage_tui.core.engines.reference_score import check_fits, reference_span

        with self._lock:  # adapters are model state shared by every request
            if self._model is None:
                raise self._not_ready()
            ids, start, end = reference_span(
                self._tokenizer, messages, reference, self._eos_ids, self.config.model_name
            )
            check_fits(len(ids), self.config.max_model_len, self.config.model_name)
            apply_engine_threads(self.reply_threads())
            self._activate(adapter)
            input_ids = torch.tensor([ids[:end]], dtype=torch.long, device=self._device)
            labels = input_ids.clone()
            labels[:, :start] = -100
            try:
                with torch.inference_mode():
                    loss = self._model(input_ids=input_ids, labels=labels).loss
            except Exception as exc:
                raise EngineError(f"scoring the reference failed: {one_line(exc)}") from exc
        return ReferenceScore(float(loss), end - start)

    def _activate(self, adapter: Adapter | None) -> None:
        """Make exactly `adapter` (or none) active for generate()."""
        # The caller holds the lock: adapters are model state shared by every request.
        model = self._model
        if adapter is None:
            if self._loaded:
                model.disable_adapters()
            return
        name = f"lora{adapter.lora_id}"
        if name not in self._loaded:
            self._load_adapter(adapter, name)
        self._loaded.move_to_end(name)
        model.set_adapter(name)
        # set_adapter picks the adapter but leaves them switched off after disable_adapters().
        model.enable_adapters()

    def _load_adapter(self, adapter: Adapter, name: str) -> None:
        model = self._model
        # A re-trained adapter gets a new lora_id, so old names pile up: drop the least
        # recently used beyond max_loras, as vLLM's adapter slots would.
        while len(self._loaded) >= max(1, self.config.max_loras):
            old, _ = self._loaded.popitem(last=False)
            model.delete_adapter(old)
        try:
            if not Path(adapter.path).is_dir():
                raise FileNotFoundError("no such folder")
            model.load_adapter(adapter.path, adapter_name=name)
        except Exception as exc:
            # A failed load can leave a half-registered adapter behind; it must not linger.
            if name in (getattr(model, "peft_config", None) or {}):
                with contextlib.suppress(Exception):
                    model.delete_adapter(name)
            raise EngineError(
                f"cannot load adapter {adapter.name} from {adapter.path}: {one_line(exc)}"
            ) from exc
        self._loaded[name] = adapter.path

    def _not_ready(self) -> EngineError:
        state = "was shut down" if self._closed else "is not started"
        return EngineError(f"the engine for {self.config.model_name} {state}")

    async def abort(self, request_id: str) -> None:
        """Stop reply `request_id` within a token; its stream ends with finish_reason "abort".

        Unknown or finished requests are ignored, as vLLM does.
        """
        stop = self._requests.get(request_id)
        if stop is not None:
            stop.set()

    async def shutdown(self) -> None:
        """Stop every generation, then drop the model and free its memory (GPU memory included)."""
        self._closed = True
        for stop in list(self._requests.values()):
            stop.set()
        # In a thread so the loop stays free while the running generate() notices its stop
        # event; the whole drop happens there so a cancelled shutdown cannot strand the lock.
        await asyncio.to_thread(self._drop)

    def _drop(self) -> None:
        with self._lock:
            on_cuda = self._device is not None and self._device.type == "cuda"
            self._model = self._tokenizer = self._device = None
            self._loaded.clear()
            gc.collect()
            if on_cuda:
                import torch

                torch.cuda.empty_cache()


def _cpu_has_bf16() -> bool:
    """Whether this torch build can run bf16 matrix products on the CPU."""
    import torch

    try:
        a = torch.ones(2, 2, dtype=torch.bfloat16)
        return bool((a @ a).sum().item() == 8)
    except Exception:
        return False
