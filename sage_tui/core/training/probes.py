"""Checkpoint probes: a few prompts the model being trained answers as it trains.

A job whose spec holds `probes` has them answered by the base at step 0 (the "before") and by
each checkpoint just after it is saved, greedily and with the job's own tokenizer and chat
template, so the user sees the answers change and not only the loss. Each round is one `probe`
event in events.jsonl: `step`, `checkpoint` (the folder's name, None at step 0), `seconds`,
`answers` ([{"prompt", "answer"}, ...]) and, when a generation failed, `error`. A failed round
is recorded and training goes on: a probe never fails a job.

The runner calls `Prober.run` on rank 0 only. The round leaves the model as it found it: back
in training mode, with the KV cache setting training chose (off under gradient checkpointing),
although generation itself runs with the cache on. torch is imported inside the functions that
use it, and the reading side (`probe_round`) needs none of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sage_tui.core.training.events import Event, EventWriter
from sage_tui.errors import one_line

PROBE = "probe"
"""The kind of a probe round's event."""


@dataclass(frozen=True)
class ProbeAnswer:
    """One probe prompt and what the model answered."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class ProbeRound:
    """The probes as one checkpoint (or the base, at step 0) answered them."""

    step: int
    checkpoint: str | None
    """The checkpoint folder's name (checkpoint-20); None for the base at step 0."""
    seconds: float | None
    answers: tuple[ProbeAnswer, ...]
    error: str | None = None
    """Why the round stopped short (the answers before it are kept)."""


def answer_probes(
    model: Any, tokenizer: Any, prompts: tuple[str, ...] | list[str], max_tokens: int
) -> list[ProbeAnswer]:
    """Each prompt's greedy answer of up to `max_tokens` tokens; the model is left in the mode
    and with the cache setting it had. Raises what generation raises (see `ProbeError`)."""
    import torch

    config = getattr(model, "config", None)
    cache = getattr(config, "use_cache", None)
    training = model.training
    answers: list[ProbeAnswer] = []
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            for prompt in prompts:
                try:
                    answer = _answer(model, tokenizer, prompt, max_tokens, device)
                except Exception as err:
                    raise ProbeError(answers, err) from err
                answers.append(ProbeAnswer(prompt, answer))
    finally:
        if config is not None and cache is not None:
            config.use_cache = cache
        if training:
            model.train()
    return answers


class ProbeError(Exception):
    """A probe's generation failed; `answers` holds those answered before it."""

    def __init__(self, answers: list[ProbeAnswer], cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {one_line(cause)}")
        self.answers = answers


def _answer(model: Any, tokenizer: Any, prompt: str, max_tokens: int, device: Any) -> str:
    if getattr(tokenizer, "chat_template", None):
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
    else:  # a base without a chat template continues the prompt as written
        inputs = tokenizer(prompt, return_tensors="pt")
    inputs = {name: value.to(device) for name, value in inputs.items()}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    output = model.generate(
        **inputs,
        max_new_tokens=max_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        use_cache=True,
        pad_token_id=pad,
    )
    prompt_length = inputs["input_ids"].shape[1]
    return tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True).strip()


class Prober:
    """Answers a job's probes and records each round as a `probe` event."""

    def __init__(
        self, prompts: tuple[str, ...], max_tokens: int, tokenizer: Any, events: EventWriter
    ) -> None:
        self.prompts = tuple(prompts)
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer
        self.events = events

    def run(self, model: Any, step: int, checkpoint: str | None) -> ProbeRound | None:
        """One round with `model` as it is now; None when the job has no probes. Any failure
        is written into the round's event, never raised."""
        if not self.prompts:
            return None
        started = time.monotonic()
        error = None
        try:
            answers = answer_probes(model, self.tokenizer, self.prompts, self.max_tokens)
        except ProbeError as err:
            answers, error = err.answers, str(err)
        except Exception as err:  # the model itself would not switch modes or say its device
            answers, error = [], f"{type(err).__name__}: {one_line(err)}"
        seconds = round(time.monotonic() - started, 3)
        extra = {} if error is None else {"error": error}
        self.events.write(
            PROBE,
            step=step,
            checkpoint=checkpoint,
            seconds=seconds,
            answers=[{"prompt": a.prompt, "answer": a.answer} for a in answers],
            **extra,
        )
        return ProbeRound(step, checkpoint, seconds, tuple(answers), error)


def probe_round(event: Event) -> ProbeRound | None:
    """A probe event as a ProbeRound; None for another kind or one without a step. The file
    is data: values of the wrong type are dropped, never trusted."""
    data = event.data
    step = data.get("step")
    if event.kind != PROBE or isinstance(step, bool) or not isinstance(step, int):
        return None
    checkpoint = data.get("checkpoint")
    seconds = data.get("seconds")
    error = data.get("error")
    raw = data.get("answers")
    answers = tuple(
        ProbeAnswer(item["prompt"], item["answer"])
        for item in (raw if isinstance(raw, list) else [])
        if isinstance(item, dict)
        and isinstance(item.get("prompt"), str)
        and isinstance(item.get("answer"), str)
    )
    return ProbeRound(
        step=step,
        checkpoint=checkpoint if isinstance(checkpoint, str) else None,
        seconds=float(seconds)
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
        else None,
        answers=answers,
        error=error if isinstance(error, str) else None,
    )


@dataclass(frozen=True)
class ProbeProgress:
    """One probe prompt's answer before training (step 0) and at the latest checkpoint."""

    prompt: str
    before: str | None
    """The base's answer; None when the step-0 round is missing or did not reach it."""
    latest: str | None
    latest_step: int | None
    """The step of the latest round that answered the prompt (above 0)."""


def probe_progress(rounds: tuple[ProbeRound, ...] | list[ProbeRound]) -> list[ProbeProgress]:
    """Per prompt (in the order they were first asked): the step-0 answer and the latest
    checkpoint's answer."""
    before: dict[str, str] = {}
    latest: dict[str, tuple[int, str]] = {}
    for found in rounds:
        for item in found.answers:
            if found.step == 0:
                before.setdefault(item.prompt, item.answer)
            else:
                latest[item.prompt] = (found.step, item.answer)
    prompts = dict.fromkeys(item.prompt for found in rounds for item in found.answers)
    return [
        ProbeProgress(
            prompt,
            before.get(prompt),
            latest[prompt][1] if prompt in latest else None,
            latest[prompt][0] if prompt in latest else None,
        )
        for prompt in prompts
    ]
