"""Sustained chat load on the real studio, for tests/test_load.py and bench/load.py.

Rounds of `concurrency` chats run at once through the studio's own chat sessions (each reply
streams from the engine and is saved to SQLite, as in the TUI) until the time is up. After each
round the resident memory of this process and of the engine's child processes is sampled.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from sage_tui.core.engines.base import Sampling
from sage_tui.core.training.spec import JobSpec

BUILTIN = "smollm2-135m-instruct"
FACTS = Path(__file__).resolve().parents[2] / "sample_data" / "sage_tui_facts.jsonl"

RUNNER = "sage_tui.core.training.runner"
QUESTIONS = (
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Write one sentence about the sea.",
    "What is two plus two?",
    "Say hello in Spanish.",
    "What do bees make?",
    "Name a large planet.",
    "What is ice made of?",
)


@dataclass
class LoadRun:
    """What a sustained run did and how memory moved."""

    rounds: int = 0
    replies: int = 0
    empty_replies: int = 0
    tokens: int = 0
    seconds: float = 0.0
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    """(seconds since start, studio RSS MiB, engine children RSS MiB) after each round (the
    training runner, also a child, is left out: it is not under load)."""

    def growth_mib(self) -> tuple[float, float]:
        """Median RSS of the last quarter of samples minus that of the second quarter (the
        first quarter is warm-up), for the studio and for the engine's children."""
        quarter = max(1, len(self.samples) // 4)
        early, late = self.samples[quarter : 2 * quarter], self.samples[-quarter:]
        return tuple(
            statistics.median(s[i] for s in late) - statistics.median(s[i] for s in early)
            for i in (1, 2)
        )

    def steady_growth_mib(self) -> tuple[float, float]:
        """Growth over the last two quarters as a leak would show it: twice the smaller of the
        medians' moves from the second quarter to the third and from the third to the last.
        A leak grows in both, so this keeps it; a one-off step (a late thread's malloc arena,
        a lazily built cache) lands in one of them and is left out."""
        quarter = max(1, len(self.samples) // 4)
        parts = [self.samples[quarter * n : quarter * (n + 1)] for n in (1, 2)]
        parts.append(self.samples[-quarter:])
        medians = [[statistics.median(s[i] for s in part) for part in parts] for i in (1, 2)]
        return tuple(2 * min(m[1] - m[0], m[2] - m[1]) for m in medians)


def _rss_mib() -> tuple[float, float]:
    """This process's RSS and that of its children but the training runner (the engine's)."""
    me = psutil.Process(os.getpid())
    children = 0
    for child in me.children(recursive=True):
        try:
            if RUNNER not in child.cmdline():
                children += child.memory_info().rss
        except psutil.Error:
            continue
    return me.memory_info().rss / 2**20, children / 2**20


async def _one(studio, question: str, sampling: Sampling) -> tuple[str, int]:
    session = studio.chat()
    reply = await session.send(question, sampling)
    text = await reply.text()
    await asyncio.to_thread(session.finish, text, reply.stats)
    return text, reply.stats.completion_tokens


async def sustained_replies(
    studio, seconds: float, concurrency: int = 8, max_tokens: int = 32
) -> LoadRun:
    """Keep `concurrency` replies going for `seconds`; returns the figures."""
    sampling = Sampling(temperature=0.7, top_p=0.95, max_tokens=max_tokens)
    run = LoadRun()
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        questions = [QUESTIONS[(run.rounds + i) % len(QUESTIONS)] for i in range(concurrency)]
        results = await asyncio.gather(*(_one(studio, q, sampling) for q in questions))
        run.rounds += 1
        run.replies += len(results)
        run.empty_replies += sum(1 for text, _ in results if not text.strip())
        run.tokens += sum(tokens for _, tokens in results)
        run.samples.append((time.monotonic() - start, *_rss_mib()))
    run.seconds = time.monotonic() - start
    return run


def vllm_studio(settings, model_dir: Path, monitor=None):
    """Services on the real vLLM engine over `settings`' home with the built-in model (at
    `model_dir`) linked in and registered, and a Studio over them."""
    from sage_tui.services import open_services
    from sage_tui.studio import Studio

    extra = {"monitor": monitor} if monitor is not None else {}
    services = open_services(settings.with_changes(engine="vllm", default_model=""), **extra)
    services.settings.paths.model_dir(BUILTIN).symlink_to(model_dir)
    services.registry.pull(BUILTIN)
    return services, Studio(services)


def endless_job(model_dir: Path, task_id: str = "ft-load") -> JobSpec:
    """A real job on the built-in model that trains until it is cancelled."""
    return JobSpec(
        task_id=task_id,
        base_model=BUILTIN,
        base_path=str(model_dir),
        dataset=str(FACTS),
        max_steps=100_000,
        batch_size=1,
        max_length=64,
        save_steps=100_000,
    ).check()
