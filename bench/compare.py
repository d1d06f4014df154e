"""Compare mode: N models of one base answering one prompt at once, versus the same N replies
one after another, on the same engine in the same run (greedy decoding, real vLLM on CPU or
CUDA, the built-in model and a trained LoRA adapter registered under N-1 names, which vLLM
serves as N-1 distinct adapters).

    .venv/bin/python bench/compare.py [--models 4] [--rounds 3] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sage_tui.core.engines.base import Sampling  # noqa: E402
from sage_tui.studio import Studio  # noqa: E402
from sage_tui.terminal import engine_output_to  # noqa: E402
from tests.support.adapters import studio_with_adapters  # noqa: E402

BUILTIN = "smollm2-135m-instruct"
PROMPT = [{"role": "user", "content": "Explain what a LoRA adapter is in two sentences."}]


async def measure(studio: Studio, names: list[str], rounds: int, sampling: Sampling) -> dict:
    await studio.compare.compare(PROMPT, names, sampling)  # warm-up: adapters loaded once
    loads = studio.services.engines.loads
    together, one_by_one, tokens = [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        replies = await studio.compare.compare(PROMPT, names, sampling)
        together.append(time.perf_counter() - started)
        tokens.append(sum(one.stats.completion_tokens for one in replies))
        started = time.perf_counter()
        for name in names:
            await (await studio.engine.reply(PROMPT, sampling, model=name)).text()
        one_by_one.append(time.perf_counter() - started)
    longest = max(replies, key=lambda one: one.stats.completion_tokens).model
    single = []
    for _ in range(rounds):  # the slowest pane's reply alone: what "together" cannot beat
        started = time.perf_counter()
        await (await studio.engine.reply(PROMPT, sampling, model=longest)).text()
        single.append(time.perf_counter() - started)
    return {
        "models": len(names),
        "together_s": statistics.median(together),
        "one_after_another_s": statistics.median(one_by_one),
        "longest_reply_alone_s": statistics.median(single),
        "tokens_per_round": statistics.median(tokens),
        "reloads_during_runs": studio.services.engines.loads - loads,
    }


async def main_async(args: argparse.Namespace, home: Path) -> dict:
    studio, names = studio_with_adapters(home, Path(args.model), BUILTIN, args.models - 1)
    try:
        return await measure(studio, names, args.rounds, Sampling(0.0, 1.0, args.max_tokens))
    finally:
        await studio.shutdown()
        studio.services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder of the built-in model")
    parser.add_argument("--models", type=int, default=4, help="2 to 4: the base and N-1 adapters")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, engine_output_to(Path(tmp) / "engine.log"):
        figures = asyncio.run(main_async(args, Path(tmp) / "home"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    for key, value in figures.items():
        print(f"{key:<22} {value:.2f}" if isinstance(value, float) else f"{key:<22} {value}")
    alone = figures["longest_reply_alone_s"]
    print(f"together / longest alone            {figures['together_s'] / alone:.2f}")
    print(f"one after another / longest alone   {figures['one_after_another_s'] / alone:.2f}")


if __name__ == "__main__":
    main()
