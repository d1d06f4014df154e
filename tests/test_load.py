"""Load on the real stack: eight concurrent replies from the real vLLM engine while a real job
trains, sustained, with flat memory (bench/load.py runs it for minutes; this runs a short
version in CI)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sage_tui.core.training.events import read_events
from sage_tui.core.training.spec import JobSpec
from sage_tui.services import open_services
from sage_tui.studio import Studio
from tests.conftest import BUILTIN, FakeMonitor, no_gpu_snapshot
from tests.support.load import sustained_replies

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
FACTS = REPO / "sample_data" / "sage_tui_facts.jsonl"
SECONDS = 45.0
# Allowed growth of resident memory between the second and the last quarter of the run.
STUDIO_GROWTH_MIB = 40.0
ENGINE_GROWTH_MIB = 80.0


def steps_done(job_dir: Path) -> int:
    return max(
        (e.data.get("step", 0) for e in read_events(job_dir)[0] if e.kind == "step"), default=0
    )


async def test_eight_replies_at_once_while_a_job_trains_keep_memory_flat(
    settings, builtin_model_dir: Path
) -> None:
    services = open_services(
        settings.with_changes(engine="vllm", default_model=""),
        monitor=FakeMonitor(no_gpu_snapshot()),
    )
    services.settings.paths.model_dir(BUILTIN).symlink_to(builtin_model_dir)
    services.registry.pull(BUILTIN)
    studio = Studio(services)
    supervisor = services.supervisor
    spec = JobSpec(
        task_id="ft-load",
        base_model=BUILTIN,
        base_path=str(builtin_model_dir),
        dataset=str(FACTS),
        max_steps=10_000,
        batch_size=1,
        max_length=64,
        save_steps=10_000,
    ).check()
    try:
        await studio.engine.start(raise_errors=True)
        job = supervisor.submit(spec)
        deadline = time.monotonic() + 300
        while steps_done(job.output_dir) < 1:  # the runner has loaded and trains
            supervisor.poll()
            assert supervisor.get(job.id).active, supervisor.get(job.id).error
            assert time.monotonic() < deadline
            time.sleep(0.5)
        before = steps_done(job.output_dir)

        run = await sustained_replies(studio, SECONDS, concurrency=8)

        supervisor.poll()
        assert supervisor.get(job.id).status == "running"
        assert steps_done(job.output_dir) > before, "the job made no progress under load"
        assert run.rounds >= 4 and run.empty_replies == 0, run
        studio_growth, engine_growth = run.growth_mib()
        assert studio_growth < STUDIO_GROWTH_MIB, run.samples
        assert engine_growth < ENGINE_GROWTH_MIB, run.samples
        conversations = services.store.query("SELECT COUNT(*) FROM conversations")[0][0]
        assert conversations == run.replies  # every chat was saved
    finally:
        if supervisor.get(spec.task_id) and supervisor.get(spec.task_id).active:
            supervisor.cancel(spec.task_id, grace_seconds=5, term_seconds=5)
        await studio.shutdown()
        services.close()
