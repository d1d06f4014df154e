"""Who holds the GPU: the attribution of NVML's processes to the engine, jobs and others
(table-driven over a fixed process table), the monitor's MIG and unknown-memory figures through
the fake NVML, the studio's roots, and the psutil lookup on this machine's real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sage_tui.core.gpu import GpuProcess, ResourceMonitor
from sage_tui.core.gpu_owners import (
    ENGINE,
    MAX_DEPTH,
    OTHER,
    LiveProcesses,
    Owner,
    OwnerShare,
    attribute,
    gpu_owners,
    job_owner,
    owner_of,
    summarise,
)
from sage_tui.core.nvml_read import MigDevice
from sage_tui.core.training.jobs import Job, JobStatus
from sage_tui.core.training.spec import JobSpec
from sage_tui.studio.gpu_use import GpuUseDesk, gpu_roots
from sage_tui.studio.state import JobsChanged, Observers
from tests.support.fake_nvml import GIB, FakeGpu, FakeMig, FakeNvml
from tests.support.fake_processes import Row, TableProcesses

STUDIO = 1000  # the studio's own process: the engine's root
RUNNER = 2000  # ft-3's runner
ROOTS = {STUDIO: ENGINE, RUNNER: job_owner("ft-3")}
# Above Linux's largest possible pid_max (2**22), so no process can have it.
MISSING_PID = 2**22 + 7

TABLE = TableProcesses(
    {
        1: Row(0, "root", "/sbin/init"),
        900: Row(1, "me", "-bash"),
        STUDIO: Row(900, "me", "sage-tui"),
        1001: Row(STUDIO, "me", "VLLM::EngineCore"),  # the engine's child
        1002: Row(1001, "me", "VLLM::Worker_TP1"),  # its grandchild
        RUNNER: Row(STUDIO, "me", "python -m sage_tui.core.training.runner /jobs/ft-3"),
        2001: Row(RUNNER, "me", "python -m sage_tui.core.training.workers 1"),  # DDP worker
        2002: Row(RUNNER, "me", "python -m sage_tui.core.training.workers 2"),
        3000: Row(1, "bob", "python train.py --lr 1e-4"),  # another user's job
        3001: Row(3000, "bob", "python train.py --worker"),
    }
)


@pytest.mark.parametrize(
    ("pid", "owner"),
    [
        (STUDIO, ENGINE),  # the transformers engine runs in the studio's process
        (1001, ENGINE),  # vLLM's EngineCore, a child
        (1002, ENGINE),  # its tensor-parallel worker, a grandchild
        (RUNNER, job_owner("ft-3")),  # the runner itself
        (2001, job_owner("ft-3")),  # a DDP worker: the nearest root is the job, not the engine
        (2002, job_owner("ft-3")),
        (3000, OTHER),  # another user's process
        (3001, OTHER),  # and its child
        (900, OTHER),  # the studio's parent is not the studio
        (MISSING_PID, OTHER),  # not visible here
    ],
    ids=lambda v: str(v),
)
def test_owner_is_the_nearest_root(pid: int, owner: Owner) -> None:
    assert owner_of(pid, ROOTS, TABLE) == owner


def test_a_job_on_a_studio_that_is_gone_is_still_the_job() -> None:
    # After a restart the runner's parent is init, not the studio: matched by its own pid.
    table = TableProcesses({RUNNER: Row(1, "me", "runner"), 2001: Row(RUNNER, "me", "worker")})
    assert owner_of(2001, ROOTS, table) == job_owner("ft-3")


def test_the_walk_is_bounded_and_survives_a_loop() -> None:
    chain = {pid: Row(pid + 1, "me", "x") for pid in range(10, 10 + MAX_DEPTH + 5)}
    deep = TableProcesses({**chain, 10 + MAX_DEPTH + 5: Row(0, "me", "root")})
    assert owner_of(10, {10 + MAX_DEPTH + 5: ENGINE}, deep) == OTHER
    assert owner_of(10, {10 + MAX_DEPTH: ENGINE}, deep) == ENGINE
    loop = TableProcesses({5: Row(6, "me", "a"), 6: Row(5, "me", "b")})
    assert owner_of(5, ROOTS, loop) == OTHER
    assert loop.parent_calls <= 2


def test_attribution_names_every_process_and_drops_none() -> None:
    processes = (
        GpuProcess(1001, 9 * GIB, "VLLM::EngineCore"),
        GpuProcess(2001, 10 * GIB, "python"),
        GpuProcess(2002, 11 * GIB, "python"),
        GpuProcess(3000, 4 * GIB, "python"),
        GpuProcess(MISSING_PID, 2 * GIB, ""),
        GpuProcess(3001, None, "python"),
    )
    owned = attribute(processes, ROOTS, TABLE)
    assert [(p.pid, p.owner.label, p.user, p.visible) for p in owned] == [
        (1001, "engine", "me", True),
        (2001, "ft-3", "me", True),
        (2002, "ft-3", "me", True),
        (3000, "other", "bob", True),
        (MISSING_PID, "other", "", False),
        (3001, "other", "bob", True),
    ]
    assert owned[3].shown_command == "python train.py --lr 1e-4"
    assert owned[4].shown_command == f"pid {MISSING_PID} (not visible here)"
    assert owned[5].used_bytes is None  # memory unknown stays unknown, never 0

    summary = summarise(0, owned)
    assert summary.shares == (
        OwnerShare(ENGINE, 9 * GIB, 0, 1),
        OwnerShare(job_owner("ft-3"), 21 * GIB, 0, 2),
        OwnerShare(OTHER, 6 * GIB, 1, 3),
    )
    assert summary.unknown == 1
    assert summary.share(ENGINE).used_bytes == 9 * GIB
    assert summary.share(job_owner("ft-9")) is None


def test_owners_with_only_unknown_memory_are_kept() -> None:
    owned = attribute((GpuProcess(1001, None, ""),), ROOTS, TABLE)
    assert summarise(0, owned).shares == (OwnerShare(ENGINE, 0, 1, 1),)


def test_two_jobs_are_told_apart_and_ordered() -> None:
    roots = {**ROOTS, 3000: job_owner("ft-1")}
    owned = attribute(
        (GpuProcess(3001, GIB, ""), GpuProcess(2001, 2 * GIB, ""), GpuProcess(1002, GIB, "")),
        roots,
        TABLE,
    )
    labels = [share.owner.label for share in summarise(0, owned).shares]
    assert labels == ["engine", "ft-1", "ft-3"]


def test_mig_instances_processes_are_read_per_instance_and_attributed() -> None:
    # An unprivileged caller cannot list a MIG GPU's processes as a whole (processes_fail);
    # each instance answers for its own.
    fake = FakeNvml(
        gpus=[
            FakeGpu(
                used=30 * GIB,
                uuid="GPU-aaaa",
                processes_fail=True,
                migs=[
                    FakeMig("MIG-1111", used=9 * GIB, total=20 * GIB, compute=[(1001, 9 * GIB)]),
                    FakeMig("MIG-2222", used=21 * GIB, total=20 * GIB, compute=[(2001, None)]),
                    FakeMig("MIG-3333", lost=True, compute=[(3000, 4 * GIB)]),
                ],
            )
        ]
    )
    with ResourceMonitor(nvml=fake) as monitor:
        (gpu,) = monitor.sample().gpus
    assert gpu.mig_uuids == ("MIG-1111", "MIG-2222", "MIG-3333")
    assert gpu.mig_devices == (
        MigDevice("MIG-1111", 9 * GIB, 20 * GIB),
        MigDevice("MIG-2222", 21 * GIB, 20 * GIB),
        MigDevice("MIG-3333", None, None),  # unreadable: shown as unknown, not empty
    )
    (owners,) = gpu_owners((gpu,), ROOTS, TABLE)
    assert [(p.pid, p.mig, p.owner.label, p.used_bytes) for p in owners.processes] == [
        (1001, "MIG-1111", "engine", 9 * GIB),
        (3000, "MIG-3333", "other", 4 * GIB),
        (2001, "MIG-2222", "ft-3", None),
    ]


def test_a_process_on_the_whole_gpu_and_an_instance_is_listed_once() -> None:
    mig = FakeMig("MIG-1111", compute=[(1001, 9 * GIB)])
    fake = FakeNvml(gpus=[FakeGpu(uuid="GPU-a", compute=[(1001, 9 * GIB)], migs=[mig])])
    with ResourceMonitor(nvml=fake) as monitor:
        (gpu,) = monitor.sample().gpus
    assert [(p.pid, p.mig) for p in gpu.processes] == [(1001, "MIG-1111")]


def _job(task_id: str, status: JobStatus, pid: int | None) -> Job:
    spec = JobSpec(task_id, "base", "/m", "/d.jsonl")
    return Job(task_id, "base", "/d.jsonl", status, spec, Path("/j"), pid, None, 0.0, 0.0, None)


def test_roots_are_the_studio_and_the_running_jobs() -> None:
    jobs = (
        _job("ft-3", JobStatus.RUNNING, RUNNER),
        _job("ft-2", JobStatus.COMPLETED, 3000),  # an ended job's pid may be anyone's now
        _job("ft-4", JobStatus.QUEUED, None),
    )
    assert gpu_roots(STUDIO, jobs) == {STUDIO: ENGINE, RUNNER: job_owner("ft-3")}


def test_the_desk_follows_the_jobs_and_fills_in_the_owners() -> None:
    observers = Observers()
    table = TableProcesses(TABLE.rows)
    desk = GpuUseDesk(table, observers, studio_pid=STUDIO)
    fake = FakeNvml(gpus=[FakeGpu(used=30 * GIB, compute=[(1001, 9 * GIB), (2001, 21 * GIB)])])
    with ResourceMonitor(nvml=fake) as monitor:
        snapshot = monitor.sample()
    before = desk.attribute(snapshot).owners_of(0)
    assert [s.owner.label for s in before.shares] == ["engine"]  # ft-3 not polled yet
    observers.publish(JobsChanged((_job("ft-3", JobStatus.RUNNING, RUNNER),)))
    after = desk.attribute(snapshot).owners_of(0)
    assert [(s.owner.label, s.used_bytes) for s in after.shares] == [
        ("engine", 9 * GIB),
        ("ft-3", 21 * GIB),
    ]
    assert table.forgotten == 2


# --- the psutil lookup on real processes ---------------------------------------------------


def test_live_lookup_walks_real_parents_and_reads_commands() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(30)", "[bold]x"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()  # it runs: its command line is its own
        lookup = LiveProcesses()
        assert lookup.parent(child.pid) == os.getpid()
        assert owner_of(child.pid, {os.getpid(): ENGINE}, lookup) == ENGINE
        details = lookup.details(child.pid)
        assert details is not None and details.command.endswith("time.sleep(30) [bold]x")
        assert details.user  # a name, or the uid as text
        assert lookup.details(MISSING_PID) is None and lookup.parent(MISSING_PID) is None
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    # A pid reused or gone is not answered from the cache.
    assert lookup.details(child.pid) is None


def test_live_lookup_forgets_processes_not_asked_about() -> None:
    lookup = LiveProcesses()
    lookup.details(os.getpid())
    lookup.forget()
    assert os.getpid() in lookup._procs
    lookup.forget()  # not asked since
    assert lookup._procs == {}


def test_live_lookup_is_cheap_enough_for_a_1_hz_poll() -> None:
    lookup = LiveProcesses()
    processes = [GpuProcess(os.getpid(), GIB, "") for _ in range(50)]
    attribute(processes, {1: ENGINE}, lookup)  # the first reads fill the cache
    start = time.perf_counter()
    for _ in range(10):
        attribute(processes, {1: ENGINE}, lookup)
        lookup.forget()
    per_sample = (time.perf_counter() - start) / 10
    assert per_sample < 0.05, per_sample  # 50 processes walked to init, well under a second
