"""Garbage-collector tuning around engine starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sage_tui.core import runtime_tuning


def run_isolated(code: str) -> str:
    """Run `code` in a fresh interpreter (the collector's state is process-wide)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_objects_alive_at_the_engine_start_are_no_longer_walked() -> None:
    out = run_isolated(
        """
        import gc
        from sage_tui.core.runtime_tuning import tune_after_engine_start
        heap = [[i] for i in range(200_000)]  # the engine's long-lived objects
        before = gc.get_freeze_count()
        tune_after_engine_start()
        print(gc.get_freeze_count() - before >= 200_000, gc.get_threshold()[2])
        """
    )
    assert out == f"True {runtime_tuning.SERVING_GEN2_THRESHOLD}"


def test_no_full_collection_while_an_engine_loads() -> None:
    out = run_isolated(
        """
        import gc
        from sage_tui.core.runtime_tuning import engine_starting
        full = []
        gc.callbacks.append(lambda phase, info: full.append(info["generation"] == 2)
                            if phase == "start" else None)
        with engine_starting():
            keep = []
            for i in range(300_000):  # an import's worth of new long-lived objects
                keep.append([i])
            during = sum(full)
        print(during, gc.get_freeze_count() >= 300_000, gc.get_threshold())
        """
    )
    during, frozen, threshold = out.split(" ", 2)
    assert during == "0"
    assert frozen == "True"
    assert threshold == f"(700, 10, {runtime_tuning.SERVING_GEN2_THRESHOLD})"


def test_a_failed_start_still_restores_the_collector() -> None:
    out = run_isolated(
        """
        import gc
        from sage_tui.core.runtime_tuning import engine_starting
        try:
            with engine_starting():
                raise RuntimeError("the engine did not load")
        except RuntimeError:
            pass
        print(gc.get_threshold()[2], gc.isenabled())
        """
    )
    assert out == f"{runtime_tuning.SERVING_GEN2_THRESHOLD} True"
