"""The OpenAI-compatible API: its overhead over in-process generation, and concurrent versus
one-after-another throughput, in one run on one engine (real vLLM on CPU or CUDA, the
built-in model, greedy decoding).

1. in process: `studio.engine.reply`, one request after another (the baseline);
2. through the API: the same requests from the official `openai` client, streaming, in a
   client process of its own (as another program would be), one after another: time to first
   token and tokens/s as the client sees them;
3. through the API, `--clients` requests at once versus the same requests one after another:
   tokens per second of the whole batch.

    .venv/bin/python bench/serve_api.py --model MODEL_DIR [--requests 8] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine_overhead import BUILTIN, PROMPTS  # noqa: E402  (the prompts its baseline used)

from sage_tui.core.engines.base import Sampling  # noqa: E402
from sage_tui.terminal import engine_output_to  # noqa: E402


def messages(number: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[number % len(PROMPTS)]}]


def speed(tokens: int, first: float | None, seconds: float) -> float:
    """Decode speed as the studio counts it: tokens after the first over the time after it."""
    if first is None or tokens < 2 or seconds <= first:
        return 0.0
    return (tokens - 1) / (seconds - first)


# -- the client process -----------------------------------------------------------------------


async def client_one(client, number: int, max_tokens: int) -> dict:
    started = time.perf_counter()
    first = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=BUILTIN,
        messages=messages(number),
        temperature=0,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    seconds = time.perf_counter() - started
    return {
        "ttft": first,
        "tokens": tokens,
        "seconds": seconds,
        "speed": speed(tokens, first, seconds),
    }


async def client_main(url: str, key: str, requests: int, clients: int, max_tokens: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)
    await client_one(client, 0, max_tokens)  # warm-up
    sequential = [await client_one(client, n, max_tokens) for n in range(requests)]
    started = time.perf_counter()
    batch = [await client_one(client, n, max_tokens) for n in range(clients)]
    batch_alone = time.perf_counter() - started
    started = time.perf_counter()
    together = await asyncio.gather(*(client_one(client, n, max_tokens) for n in range(clients)))
    batch_together = time.perf_counter() - started
    await client.close()
    return {
        "sequential": sequential,
        "batch_one_by_one_s": batch_alone,
        "batch_one_by_one_tokens": sum(r["tokens"] for r in batch),
        "batch_together_s": batch_together,
        "batch_together_tokens": sum(r["tokens"] for r in together),
    }


# -- the server process -----------------------------------------------------------------------


async def in_process(studio, requests: int, max_tokens: int) -> list[dict]:
    sampling = Sampling(0.0, 1.0, max_tokens)
    await (await studio.engine.reply(messages(0), sampling, model=BUILTIN)).text()  # warm-up
    done = []
    for number in range(requests):
        started = time.perf_counter()
        reply = await studio.engine.reply(messages(number), sampling, model=BUILTIN)
        await reply.text()
        stats = reply.stats
        done.append(
            {
                "ttft": stats.time_to_first_token,
                "tokens": stats.completion_tokens,
                "seconds": time.perf_counter() - started,
                "speed": stats.tokens_per_second,
            }
        )
    return done


async def server_main(args: argparse.Namespace, home: Path) -> dict:
    from sage_tui.cli.serve import api_server
    from tests.support.adapters import studio_with_adapters

    studio, _ = studio_with_adapters(home, Path(args.model), BUILTIN, 0)
    studio.services.api_server = api_server
    try:
        await studio.engine.start(BUILTIN, raise_errors=True)
        local = await in_process(studio, args.requests, args.max_tokens)
        state = await studio.serving.start(port=0)
        command = [sys.executable, __file__, "--client", state.url, studio.serving.key()]
        command += [str(args.requests), str(args.clients), str(args.max_tokens)]
        child = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
        out, _ = await child.communicate()
        remote = json.loads(out)
        return {"in_process": local, **remote, "loads": studio.services.engines.loads}
    finally:
        await studio.shutdown()
        studio.services.close()


def median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows if row[key] is not None)


def report(figures: dict, args: argparse.Namespace) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.requests} requests,")
    print(f"greedy, at most {args.max_tokens} tokens; engine loads: {figures['loads']}")
    local, api = figures["in_process"], figures["sequential"]
    print(f"{'':<28}{'TTFT ms':>10}{'tokens/s':>10}{'s/reply':>10}")
    for name, rows in (("in process (baseline)", local), ("through the API", api)):
        ttft, rate, seconds = median(rows, "ttft"), median(rows, "speed"), median(rows, "seconds")
        print(f"{name:<28}{ttft * 1000:>10.1f}{rate:>10.1f}{seconds:>10.2f}")
    ratio = median(api, "speed") / median(local, "speed")
    print(f"API tokens/s / in-process tokens/s: {ratio:.3f} (target >= 0.90)")
    alone = figures["batch_one_by_one_tokens"] / figures["batch_one_by_one_s"]
    together = figures["batch_together_tokens"] / figures["batch_together_s"]
    print(
        f"{args.clients} requests one after another: {figures['batch_one_by_one_s']:.2f} s,"
        f" {alone:.1f} tokens/s"
    )
    print(
        f"{args.clients} requests at once:          {figures['batch_together_s']:.2f} s,"
        f" {together:.1f} tokens/s ({together / alone:.2f}x)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, key, requests, clients, max_tokens = sys.argv[2:7]
        figures = asyncio.run(client_main(url, key, int(requests), int(clients), int(max_tokens)))
        print(json.dumps(figures))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder of the built-in model")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, engine_output_to(Path(tmp) / "engine.log"):
        figures = asyncio.run(server_main(args, Path(tmp) / "home"))
    report(figures, args)


if __name__ == "__main__":
    main()
