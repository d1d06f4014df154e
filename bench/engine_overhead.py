"""Inference speed through the engine manager versus raw vLLM and plain transformers.

All in one run, on the same model and prompts, greedy decoding:

1. raw `AsyncLLM` (vLLM V1), built with the same settings the manager chooses;
2. the engine manager (`EngineManager.generate`), which adds chat templating, context fitting,
   adapter bookkeeping and statistics on top;
3. plain transformers `generate` (bf16, no streaming: time to first token is measured as the
   time of a one-token generate).

Then adapter switching: time from asking for a newly selected LoRA adapter to its first token,
versus a full engine reload (switch to another base model, then first token).

    .venv/bin/python bench/engine_overhead.py [--requests 8] [--max-tokens 64]
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

from sage_tui.config import Settings  # noqa: E402
from sage_tui.core.engines.base import Sampling  # noqa: E402
from sage_tui.services import open_services  # noqa: E402
from sage_tui.terminal import engine_output_to  # noqa: E402

BUILTIN = "smollm2-135m-instruct"
PROMPTS = [
    "What is the capital of France?",
    "Explain what a LoRA adapter is in two sentences.",
    "List three uses of a lighthouse.",
    "Why is the sky blue?",
]


def summarise(name: str, ttfts: list[float], speeds: list[float], out) -> tuple[float, float]:
    ttft, speed = statistics.median(ttfts), statistics.median(speeds)
    print(f"{name:<34} {ttft * 1000:10.1f} {speed:12.1f}", file=out, flush=True)
    return ttft, speed


async def bench_manager(services, requests: int, sampling: Sampling):
    engines = services.engines
    await engines.ensure_loaded()
    ttfts, speeds = [], []
    for i in range(requests + 1):
        reply = await engines.generate(
            [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], sampling
        )
        await reply.text()
        if i:  # the first request warms up
            ttfts.append(reply.stats.time_to_first_token)
            speeds.append(reply.stats.tokens_per_second)
    return ttfts, speeds, engines.engine_config


async def bench_raw(config, prompt_ids: list[list[int]], requests: int, sampling: Sampling):
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(
        model=config.model_path,
        max_model_len=config.max_model_len,
        enable_lora=True,
        max_lora_rank=config.max_lora_rank,
        max_loras=config.max_loras,
        disable_log_stats=True,
    )
    llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
    params = SamplingParams(
        temperature=0.0, max_tokens=sampling.max_tokens, output_kind=RequestOutputKind.DELTA
    )
    ttfts, speeds = [], []
    for i in range(requests + 1):
        started, first, tokens = time.monotonic(), None, 0
        ids = prompt_ids[i % len(prompt_ids)]
        async for out in llm.generate({"prompt_token_ids": ids}, params, f"raw-{i}"):
            n = len(out.outputs[0].token_ids)
            if n and first is None:
                first = time.monotonic() - started
            tokens += n
        total = time.monotonic() - started
        if i:
            ttfts.append(first)
            speeds.append((tokens - 1) / (total - first))
    await asyncio.to_thread(llm.shutdown)
    return ttfts, speeds


def bench_transformers(model_dir: str, prompt_ids: list[list[int]], requests: int, max_tokens: int):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    ttfts, speeds = [], []
    for i in range(requests + 1):
        ids = torch.tensor([prompt_ids[i % len(prompt_ids)]])
        started = time.monotonic()
        model.generate(ids, max_new_tokens=1, do_sample=False)
        first = time.monotonic() - started
        started = time.monotonic()
        out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
        total = time.monotonic() - started
        tokens = out.shape[1] - ids.shape[1]
        if i:
            ttfts.append(first)
            speeds.append((tokens - 1) / max(total - first, 1e-9))
    return ttfts, speeds


async def first_token_after(engines, question, sampling: Sampling, started: float) -> float:
    """Seconds from `started` to the first text of a reply (which is then read to the end)."""
    first = None
    async for _ in await engines.generate(question, sampling):
        first = first or time.monotonic() - started
    return first


async def bench_switching(services, adapter_dir: Path, rounds: int, out) -> None:
    engines = services.engines
    question = [{"role": "user", "content": "What is the secret code of sage-tui?"}]
    sampling = Sampling(temperature=0.0, max_tokens=8)
    adapter_times, reload_times = [], []
    for i in range(rounds):
        name = f"bench-adapter-{i}"  # a new adapter each round: nothing cached
        services.registry.register_adapter(name, adapter_dir, BUILTIN)
        started = time.monotonic()
        await engines.switch_model(name)
        adapter_times.append(await first_token_after(engines, question, sampling, started))
    for target in ["twin", BUILTIN]:
        started = time.monotonic()
        result = await engines.switch_model(target)
        assert result.reloaded
        reload_times.append(await first_token_after(engines, question, sampling, started))
    print(
        f"{'adapter switch -> first token':<34} {statistics.median(adapter_times):10.3f} s"
        f"  (median of {rounds}, no reload)",
        file=out,
    )
    print(
        f"{'base reload -> first token':<34} {statistics.median(reload_times):10.3f} s"
        f"  (median of {len(reload_times)})",
        file=out,
    )


async def main_async(args, out) -> None:
    home = Path(tempfile.mkdtemp(prefix="sage-bench-engine-"))
    services = open_services(Settings.load(home=home, engine="vllm"))
    from tests.conftest import Paths, is_provisioned, resolve_home

    installed = Paths(resolve_home()).model_dir(BUILTIN)
    model_dir = installed if is_provisioned(installed) else REPO / ".cache" / "models" / BUILTIN
    services.settings.paths.model_dir(BUILTIN).symlink_to(model_dir)
    services.registry.pull(BUILTIN)
    (home / "twin").symlink_to(model_dir)
    services.registry.import_model(str(home / "twin"), name="twin")
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens)

    print(f"{'path':<34} {'TTFT ms':>10} {'tokens/s':>12}   (median of {args.requests})", file=out)
    m_ttft, m_speed, config = await bench_manager(services, args.requests, sampling)
    engine = services.engines._engine
    prompt_ids = [engine.prompt_ids([{"role": "user", "content": p}]) for p in PROMPTS]
    from tests.support.adapters import tiny_adapter

    await bench_switching(services, tiny_adapter(model_dir), args.switches, out)
    await services.engines.shutdown()
    r = summarise(
        "raw AsyncLLM", *await bench_raw(config, prompt_ids, args.requests, sampling), out
    )
    m = summarise("engine manager (vLLM)", m_ttft, m_speed, out)
    summarise(
        "plain transformers generate",
        *bench_transformers(str(model_dir), prompt_ids, args.requests, args.max_tokens),
        out,
    )
    print(
        f"manager vs raw: TTFT {100 * (m[0] / r[0] - 1):+.1f} %,"
        f" tokens/s {100 * (m[1] / r[1] - 1):+.1f} %",
        file=out,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--switches", type=int, default=3)
    args = parser.parse_args()
    log = Path(tempfile.gettempdir()) / "sage-bench-engine.log"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python"
        f" {platform.python_version()}; engine output in {log}"
    )
    with engine_output_to(log) as (out, _):
        asyncio.run(main_async(args, out))


if __name__ == "__main__":
    main()
