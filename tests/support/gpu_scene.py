"""A fixed scene for the GPU panel and the status line: two GPUs (fake NVML) held by the
studio's engine, a running job (ft-3), another user's process, a pid not visible here and a
process whose memory NVML cannot read; a process table that decides the owners; a history of
five minutes of samples. Nothing real (psutil, the clock) decides what the screen shows."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from sage_tui.core.gpu import ResourceMonitor
from sage_tui.core.gpu_history import GpuHistory
from sage_tui.core.training.jobs import Job, JobStatus
from sage_tui.core.training.spec import JobSpec
from sage_tui.services import Services
from tests.support.fake_nvml import GIB, FakeGpu, FakeNvml
from tests.support.fake_processes import Row, TableProcesses
from tests.support.supervising import FixedJobs

ENGINE_CORE = 5001
RUNNER = 6001
DDP_WORKER = 6002
BOB = 7001
CAROL = 7002
HIDDEN = 8888  # NVML lists it; this machine shows no such process


def scene_nvml() -> FakeNvml:
    """GPU0: the engine, ft-3's runner, bob, a hidden pid; GPU1: ft-3's DDP worker, carol."""
    return FakeNvml(
        gpus=[
            FakeGpu(
                used=61 * GIB,
                utilization=87,
                uuid="GPU-00000000-aaaa-4000-8000-000000000000",
                compute=[
                    (ENGINE_CORE, int(9.1 * GIB)),
                    (RUNNER, 21 * GIB),
                    (BOB, 4 * GIB),
                    (HIDDEN, None),
                ],
            ),
            FakeGpu(
                used=27 * GIB,
                utilization=41,
                uuid="GPU-11111111-aaaa-4000-8000-000000000001",
                compute=[(DDP_WORKER, 20 * GIB), (CAROL, 6 * GIB)],
            ),
        ]
    )


def scene_processes() -> TableProcesses:
    """The table the owners are read from; the engine's parent is this test process."""
    studio = os.getpid()
    return TableProcesses(
        {
            ENGINE_CORE: Row(studio, "alice", "VLLM::EngineCore"),
            RUNNER: Row(studio, "alice", "python -m sage_tui.core.training.runner ft-3"),
            DDP_WORKER: Row(RUNNER, "alice", "python -m sage_tui.core.training.workers 1"),
            BOB: Row(1, "bob", "python [bold]train.py[/bold] --lr 1e-4 \x1b[31m"),
            CAROL: Row(1, "carol", "/opt/conda/bin/python -m jupyter lab"),
        }
    )


def running_job(folder: Path) -> Job:
    """ft-3, running as pid RUNNER on both GPUs."""
    spec = JobSpec("ft-3", "qwen2.5-7b-instruct", "/srv/models/qwen", "/data/facts.jsonl")
    folder.mkdir(parents=True, exist_ok=True)
    return Job(
        "ft-3",
        spec.base_model,
        spec.dataset,
        JobStatus.RUNNING,
        spec,
        folder,
        RUNNER,
        None,
        0.0,
        0.0,
        None,
        gpus=(0, 1),
    )


def stage(services: Services, tmp: Path) -> None:
    """Put the scene into `services` (before the App is built)."""
    services.monitor = ResourceMonitor(nvml=scene_nvml(), clock=lambda: 0.0)
    services.processes = scene_processes()
    services.supervisor = FixedJobs([running_job(tmp / "ft-3")])


def seed_history(history: GpuHistory) -> None:
    """Five minutes of fixed samples before the live one (taken at 0.0)."""
    with ResourceMonitor(nvml=scene_nvml(), clock=lambda: 0.0) as monitor:
        base = monitor.sample()
    for second in range(-300, 0):
        wave = (second * 7) % 60
        gpus = (
            replace(base.gpus[0], utilization=30 + wave, memory_used=(40 + wave // 3) * GIB),
            replace(base.gpus[1], utilization=wave, memory_used=(20 + wave // 10) * GIB),
        )
        history.add(replace(base, gpus=gpus, taken_at=float(second)))
