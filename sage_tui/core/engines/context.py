"""Fitting a conversation into the engine's context: oldest turns are left out first."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from sage_tui.core.engines.base import Engine, Message, Sampling
from sage_tui.errors import SageError


async def fit_context(
    engine: Engine, messages: list[Message], sampling: Sampling
) -> tuple[list[int], Sampling, int]:
    """Token ids that fit the context, dropping the oldest turns first."""
    limit = engine.config.max_model_len
    system = [m for m in messages[:1] if m.get("role") == "system"]
    turns = messages[len(system) :]
    trimmed = 0
    while True:
        prompt = await asyncio.to_thread(engine.prompt_ids, system + turns)
        if len(prompt) + sampling.max_tokens <= limit:
            return prompt, sampling, trimmed
        if len(turns) > 1:
            turns = turns[1:]
            trimmed += 1
            continue
        return prompt, fit_reply(engine, prompt, sampling, "message"), trimmed


def fit_reply(engine: Engine, prompt: list[int], sampling: Sampling, what: str) -> Sampling:
    """`sampling` with max tokens cut to the room `prompt` leaves in the context (a shorter
    reply rather than none, given room for at least 16 tokens); SageError naming `what` (the
    message, the prompt) when it leaves none."""
    limit = engine.config.max_model_len
    room = limit - len(prompt)
    if room >= sampling.max_tokens:
        return sampling
    if room >= 16:
        return replace(sampling, max_tokens=room)
    raise SageError(
        f"the {what} is {len(prompt)} tokens; {engine.config.model_name} takes at most"
        f" {limit} tokens of context: shorten it"
    )
