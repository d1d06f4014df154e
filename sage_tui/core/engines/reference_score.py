"""Which tokens of a conversation are the reference reply, for scoring it under a model.

Both engines render the conversation twice through the model's chat template: up to the reply
prompt (what a reply is generated from) and with the reference as the assistant's turn. The
reference span is what the second adds after the first, cut after the last end-of-turn token
(ChatML's `<|im_end|>`, the model's EOS): the template's whitespace after it ends no reply, so
it is not scored. The end-of-turn token is scored, because a model that would not stop after
the reference has not learnt it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sage_tui.core.engines.base import EngineError, Message, ReferenceScore
from sage_tui.errors import one_line


def template_ids(tokenizer: Any, messages: Sequence[Message], *, reply_prompt: bool) -> list[int]:
    """Token ids of `messages` through the chat template (ending in the reply prompt, or not)."""
    out = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=reply_prompt, tokenize=True
    )
    # transformers 5 returns a BatchEncoding; older versions a plain list.
    if not isinstance(out, list) and hasattr(out, "keys") and "input_ids" in out:
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(t) for t in out]


def reference_span(
    tokenizer: Any,
    messages: Sequence[Message],
    reference: str,
    end_ids: Iterable[int],
    model_name: str,
) -> tuple[list[int], int, int]:
    """(ids, start, end): the conversation with `reference` as the assistant's reply, and the
    slice of `ids` that is the reference and its end-of-turn token. EngineError when the
    template cannot be used for it."""
    if not getattr(tokenizer, "chat_template", None):
        raise EngineError(f"{model_name} has no chat template")
    if not messages:
        raise EngineError("a reference needs the conversation before it")
    try:
        prompt = template_ids(tokenizer, messages, reply_prompt=True)
        ids = template_ids(
            tokenizer,
            [*messages, {"role": "assistant", "content": reference}],
            reply_prompt=False,
        )
    except Exception as exc:
        raise EngineError(f"chat template of {model_name}: {one_line(exc)}") from exc
    if len(ids) <= len(prompt) or ids[: len(prompt)] != prompt:
        # Templates that rewrite earlier turns once a reply follows (reasoning models drop
        # their thinking) give no span that is the reply alone.
        raise EngineError(
            f"the chat template of {model_name} renders a reply differently from its reply"
            " prompt, so the reference's tokens cannot be told apart"
        )
    start = len(prompt)
    ends = set(end_ids)
    last_end = max((i for i in range(start, len(ids)) if ids[i] in ends), default=None)
    end = last_end + 1 if last_end is not None else len(ids)
    return ids, start, end


def end_of_turn_ids(tokenizer: Any, model_path: str) -> set[int]:
    """Tokens that end a reply: the tokenizer's EOS and the model's generation_config EOS."""
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    try:
        config = json.loads((Path(model_path) / "generation_config.json").read_text())
    except (OSError, ValueError):
        return ids
    eos = config.get("eos_token_id") if isinstance(config, dict) else None
    for one in eos if isinstance(eos, list) else [eos]:
        if isinstance(one, int):
            ids.add(one)
    return ids


def from_logprobs(logprobs: Sequence[float]) -> ReferenceScore:
    """The score from each reference token's log-probability; EngineError on a non-finite one."""
    if not logprobs:
        raise EngineError("the reference has no tokens to score")
    loss = -math.fsum(logprobs) / len(logprobs)
    if not math.isfinite(loss):
        raise EngineError("the model gave a reference token no probability at all")
    return ReferenceScore(loss, len(logprobs))


def check_fits(length: int, limit: int, model_name: str) -> None:
    """EngineError when a conversation and its reference (`length` tokens) exceed the context."""
    if length + 1 > limit:  # vLLM still samples one token after the prompt
        raise EngineError(
            f"the conversation and its reference are {length} tokens; {model_name} takes at"
            f" most {limit} tokens of context"
        )
