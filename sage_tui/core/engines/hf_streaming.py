"""What transformers' generate() calls back into while the fallback engine streams a reply.

A streamer that turns token ids into Deltas and a stopping criterion that ends generation when
the request is aborted. Both subclass transformers classes, so they are built on first use:
`sage_tui.core` must stay cheap to import (tests/test_layering.py checks it).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from sage_tui.core.engines.base import Delta

Post = Callable[[tuple[str, Any]], None]
"""Hands one event ("delta" or "error", payload) from the generation thread to the loop."""


@functools.cache
def helper_classes() -> tuple[type, type]:
    """The streamer and stopping-criterion classes, built on first use.

    They subclass transformers classes, so defining them at module level would import
    transformers with the core.
    """
    import torch
    from transformers import StoppingCriteria
    from transformers.generation.streamers import BaseStreamer

    class DeltaStreamer(BaseStreamer):
        """Receives token ids from generate(), decodes them incrementally and posts Deltas.

        Counting here rather than re-tokenizing the text keeps token counts exact: a token may
        decode to no text (EOS, half a UTF-8 character) and still be counted.
        """

        def __init__(self, tokenizer: Any, post: Post) -> None:
            self.tokenizer = tokenizer
            self.post = post
            self.ids: list[int] = []
            self.sent_text = ""
            self.pending_tokens = 0
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            # generate() first hands over the whole prompt; it is not part of the reply.
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            new = [int(t) for t in value.reshape(-1).tolist()]
            self.ids.extend(new)
            self.pending_tokens += len(new)
            text = self._decoded()
            # A trailing U+FFFD is usually a multi-byte character split across tokens: wait for
            # the rest rather than showing a replacement character that later changes.
            if text.endswith("\ufffd") or len(text) <= len(self.sent_text):
                return
            if not text.startswith(self.sent_text):
                # Re-decoding changed earlier text (rare tokenizer merges); hold until the end.
                return
            self.post(("delta", Delta(text[len(self.sent_text) :], self.pending_tokens)))
            self.sent_text = text
            self.pending_tokens = 0

        def end(self) -> None:
            # The final Delta needs the finish reason, which only the caller of generate() knows.
            pass

        def finish(self, reason: str) -> None:
            """Post the last Delta: leftover text and tokens, and why the reply ended."""
            text = self._decoded()
            rest = text[len(self.sent_text) :] if text.startswith(self.sent_text) else ""
            self.post(("delta", Delta(rest, self.pending_tokens, reason)))
            self.sent_text = text
            self.pending_tokens = 0

        def _decoded(self) -> str:
            return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    class StopOnEvent(StoppingCriteria):
        """Ends generation once `event` is set (abort, consumer gone, shutdown)."""

        def __init__(self, event: threading.Event) -> None:
            self.event = event
            self.fired = False

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            stop = self.event.is_set()
            self.fired = self.fired or stop
            return torch.full(
                (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
            )

    return DeltaStreamer, StopOnEvent
