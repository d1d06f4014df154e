"""Load on the real stack: eight concurrent replies from the real vLLM engine while a real job
trains, sustained, with flat memory. `bench/load.py` runs for minutes; this runs it for 45 s in
a fresh process (memory measured in a process that does nothing else) and checks its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
SECONDS = 45
# Allowed steady growth of resident memory over the last half of the run (see
# `LoadRun.steady_growth_mib`: a 45 s run is too short to tell a one-off step from a leak
# by the plain growth, which CI once saw at 42.8 MiB in a run whose 5-minute twin moves 0.3).
STUDIO_GROWTH_MIB = 40.0
ENGINE_GROWTH_MIB = 80.0


def test_eight_replies_at_once_while_a_job_trains_keep_memory_flat(builtin_model_dir: Path) -> None:
    bench = [sys.executable, str(REPO / "bench" / "load.py"), "--model", str(builtin_model_dir)]
    # glibc gives each new thread its own malloc arena: an executor thread started late (a
    # busy machine) showed as a one-off 45 MiB step in the last quarter, not a leak. Two arenas
    # keep the figure about the studio's own objects.
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    done = subprocess.run(
        [*bench, "--seconds", str(SECONDS), "--baseline", "5"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout[done.stdout.index("{") :])
    assert figures["job_status_after"] == "running", figures
    assert figures["steps_per_min_under_load"] > 0, "the job made no progress under load"
    assert figures["rounds"] >= 4 and figures["empty_replies"] == 0, figures
    assert figures["conversations_saved"] == figures["replies"], figures  # every chat saved
    assert figures["studio_steady_growth_mib"] < STUDIO_GROWTH_MIB, figures
    assert figures["engine_steady_growth_mib"] < ENGINE_GROWTH_MIB, figures
