"""UI responsiveness: event-loop lag of the real App while the engine loads, a job trains and
a reply streams; training steps per minute and reply tokens/s alongside.

A 20 ms `set_interval` ticker runs on the App's event loop; its lag is each actual interval
minus 20 ms (p50 / p99 / max per phase). The App runs headless (`run_test`) over a fresh
SAGE_HOME with the built-in model linked in; the engine's output goes to a log. Phases, in
order: idle; engine loading; chat (replies stream, no job); job starting (the runner imports
and loads); job running; job + chat (a job trains while replies stream back to back).

Each variant runs in its own process (the tuning is process-wide): `fixed` is the studio as
it is (each engine start under `runtime_tuning.engine_starting()`, the CPU share for vLLM's
EngineCore, for runners and for the in-process transformers engine's threads); `baseline`
takes those fixes out again. Variants alternate.

    .venv/bin/python bench/ui_lag.py [--engine vllm|transformers] [--rounds 1]
        [--variants baseline,fixed] [--seconds 25] [--diagnose]

`--diagnose` also records every garbage collection over 10 ms and, for each stall over
100 ms, the Python stack of the event-loop thread and of the other busy threads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# Child processes (the runner, vLLM's) import sage_tui from this tree too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

BUILTIN = "smollm2-135m-instruct"
DATA = REPO / "sample_data" / "sage_tui_facts.jsonl"
TICK = 0.02
PROMPT = "Write a long story about Orla, a lighthouse keeper, and the storms she saw."

# -- app glue: the only code that knows the App's API; adapt it when the API moves ------------
# Two shapes are handled: the App over a `studio` (SageApp(services), app.studio.engine,
# services.supervisor) and the earlier one (SageApp(services, start_engine=False),
# app.load_engine(), app.engine_state, app.supervisor).


def build_app(services):
    """The real App over `services`, its engine held back until `start_engine(app)`."""
    from sage_tui.ui.app import SageApp

    try:
        app = SageApp(services, start_engine=False)
    except TypeError:  # the studio App starts the engine on mount: make that wait
        app = SageApp(services)
        desk = app.studio.engine
        original, gate = desk.start, asyncio.Event()

        async def start(*args, **kwargs):
            await gate.wait()
            return await original(*args, **kwargs)

        desk.start = start
        app._bench_gate = gate
    app.bench_said = []
    notify = app.notify

    def recording_notify(message, *args, **kwargs):
        app.bench_said.append(str(message))
        return notify(message, *args, **kwargs)

    app.notify = recording_notify
    return app


def start_engine(app) -> None:
    """Begin loading the engine for the active model (returns at once)."""
    gate = getattr(app, "_bench_gate", None)
    if gate is not None:
        gate.set()
    else:
        app.load_engine()


def engine_ready(app) -> bool:
    """Whether the engine serves (True) or is still loading (False); raises if it failed."""
    if hasattr(app, "studio"):
        status = app.studio.engine.status
        state, error = str(status.state), status.error
    else:
        state, error = app.engine_state, app.engine_error
    if state in ("failed", "stopped"):
        raise RuntimeError(f"engine {state}: {error}")
    return state == "ready"


def supervisor(app):
    """The App's job supervisor."""
    found = getattr(app.services, "supervisor", None)
    return found if found is not None else app.supervisor


def submit_job(app, spec) -> str:
    """Start a fine-tuning job (blocking: call it in a thread); its id."""
    return supervisor(app).submit(spec).id


def job_dir(app, job_id: str) -> Path:
    """The job's folder (where events.jsonl is)."""
    return app.services.settings.paths.job_dir(job_id)


def stop_job(app, job_id: str) -> None:
    """End the job quickly (blocking)."""
    supervisor(app).cancel(job_id, grace_seconds=0, term_seconds=5)


async def send_chat(app, pilot, text: str):
    """Type `text` into the chat box and press Enter; the Reply once it streams."""
    screen = app.screen
    box = screen.query_one("#chat-input")
    box.value = text
    box.focus()
    await pilot.press("enter")
    deadline = time.monotonic() + 60
    while screen.reply is None:
        if time.monotonic() > deadline:
            import faulthandler

            faulthandler.dump_traceback(file=sys.__stderr__)  # where it is stuck, in the log
            for task in asyncio.all_tasks():
                task.print_stack(limit=8, file=sys.__stderr__)
            said = app.bench_said[-5:]
            raise RuntimeError(f"the chat did not start a reply; the App said {said}")
        await asyncio.sleep(0.01)
    return screen.reply


def reply_streaming(app) -> bool:
    """Whether a reply is still streaming into the transcript."""
    return app.screen.reply is not None


def set_chat_sampling(app, max_tokens: int) -> None:
    """Greedy replies of at most `max_tokens`, so both variants generate the same text."""
    screen = app.screen
    screen.query_one("#chat-temperature").value = "0"
    screen.query_one("#chat-max-tokens").value = str(max_tokens)


# -- measuring ------------------------------------------------------------------------------


class LagProbe:
    """Lag of each tick of a 20 ms timer, filed under the current phase."""

    def __init__(self, diagnose: bool) -> None:
        self.phase: str | None = None
        self.samples: dict[str, list[float]] = {}
        self.windows: dict[str, tuple[float, float]] = {}
        self.last: float | None = None
        self.loop_thread = threading.get_ident()
        self.diagnose = diagnose
        self.gcs: list[dict] = []
        self.stalls: list[dict] = []
        self._gc_started: float | None = None
        self._stop = threading.Event()

    def begin(self, phase: str) -> None:
        self.end()
        self.phase = phase
        self.samples.setdefault(phase, [])
        self.windows[phase] = (time.time(), 0.0)
        self.last = None

    def end(self) -> None:
        if self.phase is not None:
            started, _ = self.windows[self.phase]
            self.windows[self.phase] = (started, time.time())
        self.phase = None

    def tick(self) -> None:
        now = time.perf_counter()
        if self.phase is not None and self.last is not None:
            self.samples[self.phase].append(now - self.last - TICK)
        self.last = now

    # diagnosis: garbage collections and stacks during stalls

    def start_diagnosis(self) -> None:
        if not self.diagnose:
            return
        gc.callbacks.append(self._gc_event)
        threading.Thread(target=self._watch, name="lag-watchdog", daemon=True).start()

    def stop_diagnosis(self) -> None:
        self._stop.set()
        if self._gc_event in gc.callbacks:
            gc.callbacks.remove(self._gc_event)

    def _gc_event(self, what: str, info: dict) -> None:
        if what == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            took = time.perf_counter() - self._gc_started
            if took > 0.01:
                self.gcs.append(
                    {
                        "phase": self.phase,
                        "generation": info["generation"],
                        "seconds": round(took, 4),
                        "on_loop": threading.get_ident() == self.loop_thread,
                        "thread": threading.current_thread().name,
                    }
                )

    def _watch(self) -> None:
        # Runs whenever it gets the GIL; a stall longer than 100 ms gets its stacks sampled.
        captured_for = None
        while not self._stop.wait(0.02):
            last = self.last
            if last is None or self.phase is None:
                continue
            late = time.perf_counter() - last
            if late > 0.1 + TICK and captured_for != last:
                captured_for = last
                frames = sys._current_frames()
                stacks = {}
                for thread in threading.enumerate():
                    frame = frames.get(thread.ident)
                    if frame is None or thread.name == "lag-watchdog":
                        continue
                    lines = traceback.format_stack(frame, limit=6)
                    stacks[thread.name] = [line.strip().replace("\n", " | ") for line in lines]
                self.stalls.append({"phase": self.phase, "late": round(late, 3), "stacks": stacks})


def lag_figures(samples: list[float]) -> dict:
    if not samples:
        return {}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {
        "ticks": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * p99,
        "max_ms": 1000 * ordered[-1],
        "over_150ms": sum(1 for s in ordered if s > 0.15),
    }


def steps_in(events_file: Path, window: tuple[float, float]) -> float | None:
    """Training steps per minute within `window` (wall-clock seconds)."""
    if not events_file.exists():
        return None
    started, ended = window
    steps = 0
    for line in events_file.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("kind") == "step" and started <= event["time"] <= ended:
            steps += 1
    return 60.0 * steps / (ended - started) if ended > started else None


# -- one variant, in this process ------------------------------------------------------------


async def measure_variant(args, out, jobs: list[tuple]) -> dict:
    from sage_tui.config import Settings
    from sage_tui.core.training.spec import JobSpec
    from sage_tui.paths import Paths, resolve_home
    from sage_tui.services import open_services

    fixed = args.child == "fixed"
    home = Path(tempfile.mkdtemp(prefix="sage-bench-lag-"))
    settings = Settings.load(home=home, engine=args.engine)
    services = open_services(settings)
    model_dir = Paths(resolve_home()).model_dir(BUILTIN)
    if not (model_dir / "config.json").exists():
        model_dir = REPO / ".cache" / "models" / BUILTIN
    services.settings.paths.model_dir(BUILTIN).symlink_to(model_dir, target_is_directory=True)
    services.registry.pull(BUILTIN)

    from sage_tui.core import cpu_share

    if not fixed:
        # The studio applies both fixes itself now: the baseline takes them out again.
        import sage_tui.core.engines.manager as manager_module

        manager_module.engine_starting = contextlib.nullcontext
        manager_module.engine_threads = lambda **kwargs: None  # the transformers engine's share
        cpu_share.engine_env = lambda **kwargs: {}  # read by vllm_engine.child_environ
        services.supervisor.runner_env = lambda gpus: {}

    probe = LagProbe(args.diagnose)
    result: dict = {"variant": args.child, "engine": args.engine, "phases": {}, "replies": {}}
    app = build_app(services)
    job_id = None
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        app.set_interval(TICK, probe.tick, name="lag probe")
        probe.start_diagnosis()
        set_chat_sampling(app, args.max_tokens)

        probe.begin("idle")
        await asyncio.sleep(5)

        probe.begin("engine loading")
        loading_started = time.monotonic()
        start_engine(app)
        await asyncio.sleep(0.2)
        while not engine_ready(app):
            await asyncio.sleep(0.05)
        result["engine_load_s"] = time.monotonic() - loading_started

        async def chat_for(phase: str, seconds: float) -> None:
            speeds = []
            ends = time.monotonic() + seconds
            while time.monotonic() < ends:
                reply = await send_chat(app, pilot, PROMPT)
                while reply_streaming(app):
                    await asyncio.sleep(0.02)
                speeds.append(
                    {
                        "tokens": reply.stats.completion_tokens,
                        "seconds": reply.stats.seconds,
                        "tokens_per_second": reply.stats.tokens_per_second,
                    }
                )
                await pilot.press("ctrl+n")  # a new conversation keeps the prompt the same
            result["replies"][phase] = speeds

        probe.begin("chat")
        await chat_for("chat", args.seconds)

        probe.begin("job starting")
        spec = JobSpec(
            task_id=f"lag-{args.child}",
            base_model=BUILTIN,
            base_path=str(model_dir),
            dataset=str(DATA),
            epochs=1000,
            max_steps=100_000,
            batch_size=2,
            max_length=128,
            save_steps=100_000,
            learning_rate=1e-4,
        )
        job_id = await asyncio.to_thread(submit_job, app, spec)
        jobs.append((app, job_id))
        events = job_dir(app, job_id) / "events.jsonl"
        deadline = time.monotonic() + 180
        while '"step"' not in (events.read_text() if events.exists() else ""):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job made no step: see {job_dir(app, job_id)}")
            await asyncio.sleep(0.2)

        probe.begin("job running")
        await asyncio.sleep(args.seconds)

        probe.begin("job + chat")
        await chat_for("job + chat", args.seconds)
        probe.end()
        probe.stop_diagnosis()

        for phase, samples in probe.samples.items():
            figures = lag_figures(samples)
            if phase in ("job running", "job + chat"):
                figures["steps_per_min"] = steps_in(events, probe.windows[phase])
            result["phases"][phase] = figures
        result["gcs"] = probe.gcs
        result["stalls"] = sorted(probe.stalls, key=lambda s: -s["late"])[:12]
        await services.engines.shutdown()
        app.exit()
    return result


async def run_variant(args, out) -> dict:
    """One variant; whatever happens, its job does not outlive it (a runner runs in its own
    session and would go on training, skewing every later figure)."""
    jobs: list[tuple] = []
    try:
        return await measure_variant(args, out, jobs)
    finally:
        for app, job_id in jobs:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(stop_job, app, job_id)


def child_main(args) -> None:
    from multiprocessing import resource_tracker

    from sage_tui.terminal import engine_output_to

    # Before Textual replaces stderr (see cli._run_app): vLLM's spawning needs a real one.
    resource_tracker.ensure_running()
    log = Path(args.result).with_suffix(".log")
    with engine_output_to(log) as (out, _):
        result = asyncio.run(run_variant(args, out))
    Path(args.result).write_text(json.dumps(result, indent=1))
    os._exit(0)  # vLLM's exit hooks may print noise or hang; the result is written


# -- the parent: run the variants, print the table --------------------------------------------


def print_table(results: list[dict]) -> None:
    print(
        f"{'variant':<9} {'phase':<15} {'ticks':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
        f" {'>150ms':>6} {'steps/min':>9} {'tokens/s':>9}"
    )
    for result in results:
        for phase, f in result["phases"].items():
            if not f:
                continue
            steps = f.get("steps_per_min")
            replies = result["replies"].get(phase) or []
            speed = statistics.median(r["tokens_per_second"] for r in replies) if replies else None
            print(
                f"{result['variant']:<9} {phase:<15} {f['ticks']:>6} {f['p50_ms']:>7.1f}"
                f" {f['p99_ms']:>7.1f} {f['max_ms']:>7.0f} {f['over_150ms']:>6}"
                f" {'' if steps is None else f'{steps:.1f}':>9}"
                f" {'' if speed is None else f'{speed:.1f}':>9}"
            )
        print(f"{result['variant']:<9} engine load {result['engine_load_s']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    parser.add_argument("--variants", default="baseline,fixed")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=25.0, help="length of timed phases")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--diagnose", action="store_true")
    parser.add_argument("--child", choices=["baseline", "fixed"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--save", help="write all results to this JSON file")
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python"
        f" {platform.python_version()}; engine {args.engine}; phases of {args.seconds:.0f} s",
        flush=True,
    )
    results = []
    folder = Path(tempfile.mkdtemp(prefix="sage-bench-lag-results-"))
    for round_ in range(args.rounds):
        for variant in args.variants.split(","):
            path = folder / f"{variant}-{round_}.json"
            command = [sys.executable, __file__, "--child", variant, "--result", str(path)]
            command += ["--engine", args.engine, "--seconds", str(args.seconds)]
            command += ["--max-tokens", str(args.max_tokens)]
            command += ["--diagnose"] if args.diagnose else []
            started = time.monotonic()
            with open(path.with_suffix(".log"), "w") as log:  # vLLM logs to stdout too
                subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
            results.append(json.loads(path.read_text()))
            print(f"{variant}: {time.monotonic() - started:.0f} s (log {path.with_suffix('.log')})")
    print_table(results)
    if args.diagnose:
        for result in results:
            print(f"\n== {result['variant']}: garbage collections over 10 ms")
            for item in result["gcs"]:
                print(f"  {item}")
            print(f"== {result['variant']}: worst stalls")
            for stall in result["stalls"]:
                print(f"  {stall['phase']}: {stall['late']:.3f} s")
                for name, lines in stall["stacks"].items():
                    print(f"    [{name}] " + " <- ".join(reversed(lines[-3:])))
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
