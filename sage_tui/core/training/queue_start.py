"""Which queued job starts next, decided inside the supervisor's transaction.

Oldest first, wherever there is room: a job that has to wait does not hold back a later one
that fits elsewhere, and a job that can never start here (a tampered id, GPUs this machine
lacks) is failed with the reason rather than left queued. A job whose memory estimate
(`memory_fit`) is more than its GPU has free waits with the figures as its reason instead of
starting into an out-of-memory crash.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from sage_tui.core.training.job_rows import settle_in
from sage_tui.core.training.jobs import stored_gpus
from sage_tui.core.training.memory_estimate import gib
from sage_tui.core.training.memory_fit import job_memory_of
from sage_tui.core.training.placement import Device, PlacementError, place
from sage_tui.paths import TASK_ID


def next_start(
    db: sqlite3.Connection, devices: Sequence[Device], jobs_per_device: int
) -> tuple[list[str], tuple[str, tuple[int, ...]] | None]:
    """The queued jobs failed because they can never start, and the first job that fits now
    with the GPUs it takes (None: every other queued job waits)."""
    held = [
        stored_gpus(row["gpus"]) or ()
        for row in db.execute("SELECT gpus FROM jobs WHERE status = 'running'")
    ]
    queued = db.execute(
        "SELECT id, spec FROM jobs WHERE status = 'queued' ORDER BY created_at ASC, rowid ASC"
    ).fetchall()
    failed: list[str] = []
    for row in queued:
        task_id = row["id"]
        if (problem := TASK_ID.problem(task_id)) is not None:
            settle_in(db, task_id, "failed", f"cannot start: {problem}")
            failed.append(task_id)
            continue
        values = json.loads(row["spec"])
        pinned = values.get("gpus") or []
        try:
            gpus = place(pinned, devices, held, jobs_per_device)
        except PlacementError as err:
            settle_in(db, task_id, "failed", str(err))
            failed.append(task_id)
            continue
        if gpus is None:
            continue
        if gpus and (short := _short_of_memory(values, gpus, devices)) is not None:
            db.execute(
                "UPDATE jobs SET error = ? WHERE id = ? AND status = 'queued'", (short, task_id)
            )
            continue
        return failed, (task_id, gpus)
    return failed, None


def _short_of_memory(values: dict, gpus: tuple[int, ...], devices: Sequence[Device]) -> str | None:
    """Why a job placed on `gpus` waits for memory (its estimate is more than one of them has
    free), or None when it fits or its estimate cannot be told."""
    memory = job_memory_of(values, cuda=True)
    if memory is None:
        return None
    free = {device.index: device.free_bytes for device in devices}
    tight = min(gpus, key=lambda index: free.get(index, 0))
    if memory.total <= free.get(tight, 0):
        return None
    return (
        f"waits for memory: needs {memory.summary()};"
        f" GPU {tight} has {gib(free.get(tight, 0))} GiB free"
    )
