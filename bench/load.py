"""Sustained load: eight concurrent replies from the real vLLM engine while a real job trains.

Phases, in one run over a fresh SAGE_HOME with the built-in model linked in:
  baseline  the job trains beside the idle (loaded) engine for `--baseline` seconds;
  load      eight chats at once, round after round, for `--seconds` while the job trains.
Reported: the job's steps per minute in each phase, replies and tokens per second under load,
and resident memory (the studio process, the engine's children) at each quarter of the load
phase, with the growth from the second quarter to the last (the first is warm-up).

    .venv/bin/python bench/load.py [--seconds 300] [--baseline 60] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

BUILTIN = "smollm2-135m-instruct"


def step_times(job_dir: Path) -> list[tuple[float, int]]:
    from sage_tui.core.training.events import read_events

    return [(e.time, e.data.get("step", 0)) for e in read_events(job_dir)[0] if e.kind == "step"]


def steps_per_minute(job_dir: Path, start: float, end: float) -> float:
    steps = [step for t, step in step_times(job_dir) if start <= t <= end]
    return (max(steps) - min(steps)) / (end - start) * 60 if len(steps) > 1 else 0.0


async def run(args) -> dict:
    from sage_tui.config import Settings
    from sage_tui.core.models.builtin import is_provisioned
    from sage_tui.paths import Paths, resolve_home
    from sage_tui.terminal import engine_output_to
    from tests.support.load import endless_job, sustained_replies, vllm_studio

    # The built-in model as `make setup` pulled it, unless named.
    model = Path(args.model) if args.model else Paths(resolve_home()).model_dir(BUILTIN)
    if not is_provisioned(model):
        raise SystemExit(f"{model} is missing: run `make setup` first")
    home = Path(tempfile.mkdtemp(prefix="sage-load-"))
    with engine_output_to(home / "logs" / "engine.log"):
        services, studio = vllm_studio(Settings(home=home), model)
        supervisor = services.supervisor
        spec = endless_job(model)
        try:
            await studio.engine.start(raise_errors=True)
            job = supervisor.submit(spec)
            while not step_times(job.output_dir):
                supervisor.poll()
                await asyncio.sleep(0.5)
            t0 = time.time()
            await asyncio.sleep(args.baseline)
            t1 = time.time()
            load = await sustained_replies(studio, args.seconds, concurrency=args.concurrency)
            t2 = time.time()
            supervisor.poll()
            status = str(supervisor.get(job.id).status)
            saved = services.store.query("SELECT COUNT(*) FROM conversations")[0][0]
        finally:
            if supervisor.get(spec.task_id).active:
                supervisor.cancel(spec.task_id, grace_seconds=5, term_seconds=5)
            await studio.shutdown()
            services.close()
    quarter = max(1, len(load.samples) // 4)
    studio_growth, engine_growth = load.growth_mib()
    studio_steady, engine_steady = load.steady_growth_mib()
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "job_status_after": status,
        "steps_per_min_baseline": round(steps_per_minute(job.output_dir, t0, t1), 1),
        "steps_per_min_under_load": round(steps_per_minute(job.output_dir, t1, t2), 1),
        "load_seconds": round(load.seconds, 1),
        "rounds": load.rounds,
        "replies": load.replies,
        "empty_replies": load.empty_replies,
        "conversations_saved": saved,
        "replies_per_s": round(load.replies / load.seconds, 2),
        "tokens_per_s": round(load.tokens / load.seconds, 1),
        "rss_mib_studio_engine_at_quarters": [
            f"{s[1]:.0f} / {s[2]:.0f}" for s in load.samples[quarter - 1 :: quarter]
        ],
        "studio_growth_mib": round(studio_growth, 1),
        "engine_growth_mib": round(engine_growth, 1),
        "studio_steady_growth_mib": round(studio_steady, 1),
        "engine_steady_growth_mib": round(engine_steady, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--baseline", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--model", help="the built-in model's folder (default: the one in ~/.sage)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
