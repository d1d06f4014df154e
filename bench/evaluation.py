"""Evaluation time per row: N rows answered by the base and an adapter together (the EvalDesk
path: every row to both models at once, eight rows in flight), versus the same answers one
model and one row after another, and the extra time of scoring the references (their loss
under each model), all on one engine in one run (greedy, real vLLM on CPU or CUDA, the
built-in model and a trained rank-8 LoRA adapter).

    .venv/bin/python bench/evaluation.py --model MODEL_DIR [--data FILE] [--rows 16]
        [--max-tokens 32]

The rows default to the shared Alpaca demo (`../shared/datasets/alpaca_en_demo.json`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sage_tui.core.engines.base import Sampling  # noqa: E402
from sage_tui.studio import Studio  # noqa: E402
from sage_tui.studio.evaluation import IN_FLIGHT  # noqa: E402
from sage_tui.terminal import engine_output_to  # noqa: E402
from tests.support.adapters import studio_with_adapters  # noqa: E402

BUILTIN = "smollm2-135m-instruct"
DATA = REPO.parent / "shared" / "datasets" / "alpaca_en_demo.json"


async def measure(studio: Studio, names: list[str], args: argparse.Namespace) -> dict:
    desk = studio.evaluation
    sampling = Sampling(0.0, 1.0, args.max_tokens)
    _, rows, _, _ = await asyncio.to_thread(desk.plan, None, args.data, names, args.rows)
    await studio.compare.compare(rows[0][1], names, sampling)  # warm-up: engine and adapter
    loads = studio.services.engines.loads

    started = time.perf_counter()
    result = await desk.evaluate(
        data=args.data, models=names, max_rows=args.rows, sampling=sampling
    )
    whole = time.perf_counter() - started

    gate = asyncio.Semaphore(IN_FLIGHT)

    async def answers(prompt):
        async with gate:
            return await studio.compare.compare(prompt, names, sampling)

    started = time.perf_counter()
    together = await asyncio.gather(*(answers(prompt) for _, prompt, _ in rows))
    answers_s = time.perf_counter() - started

    async def score(prompt, reference, name):
        async with gate:
            return await studio.engine.score_reference(prompt, reference, model=name)

    started = time.perf_counter()
    await asyncio.gather(*(score(p, ref, n) for _, p, ref in rows for n in names))
    scoring_s = time.perf_counter() - started

    started = time.perf_counter()
    for name in names:
        for _, prompt, _ in rows:
            await (await studio.engine.reply(prompt, sampling, model=name)).text()
    sequential_s = time.perf_counter() - started

    n = len(rows)
    return {
        "rows": n,
        "evaluate_s": whole,
        "evaluate_per_row_s": whole / n,
        "answers_together_per_row_s": answers_s / n,
        "answers_one_after_another_per_row_s": sequential_s / n,
        "scoring_per_row_s": scoring_s / n,
        "tokens_answered": sum(r.stats.completion_tokens for one in together for r in one),
        "loss_base": result.summary[names[0]].get("loss", float("nan")),
        "loss_adapter": result.summary[names[1]].get("loss", float("nan")),
        "failed": sum(len(r.errors) + len(r.loss_errors) for r in result.rows),
        "reloads_during_runs": studio.services.engines.loads - loads,
    }


async def main_async(args: argparse.Namespace, home: Path) -> dict:
    studio, names = studio_with_adapters(home, Path(args.model), BUILTIN, 1)
    try:
        return await measure(studio, names, args)
    finally:
        await studio.shutdown()
        studio.services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder of the built-in model")
    parser.add_argument("--data", default=str(DATA), help="rows to evaluate on")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, engine_output_to(Path(tmp) / "engine.log"):
        figures = asyncio.run(main_async(args, Path(tmp) / "home"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    for key, value in figures.items():
        print(f"{key:<38} {value:.3f}" if isinstance(value, float) else f"{key:<38} {value}")
    ratio = figures["answers_one_after_another_per_row_s"] / figures["answers_together_per_row_s"]
    print(f"one after another / together           {ratio:.2f}")


if __name__ == "__main__":
    main()
