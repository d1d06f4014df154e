"""The supervisor's queue, with the fake runner: slots, one job per GPU, pinning, backfill."""

from __future__ import annotations

import json
import os

import pytest

from sage_tui.core.training.placement import Device
from sage_tui.core.training.supervisor import Job, JobError, Supervisor
from tests.support.supervising import ended, stepping, wait_for


def test_queue_starts_the_next_job_when_one_ends(supervisors, spec_for, modes) -> None:
    sup = supervisors(jobs_per_device=1)
    modes["a"] = "hang"
    assert sup.submit(spec_for("a")).status == "running"
    assert sup.submit(spec_for("b")).status == "queued"
    wait_for(sup, "a", stepping)
    sup.poll()
    assert sup.get("b").status == "queued"
    assert [j.id for j in sup.list()] == ["b", "a"]
    sup.cancel("a", grace_seconds=10)
    assert sup.get("b").status == "running"  # cancel's poll started it
    assert wait_for(sup, "b", ended).status == "completed"


def test_two_slots_run_two_jobs(supervisors, spec_for) -> None:
    sup = supervisors(jobs_per_device=2)
    assert sup.submit(spec_for("x")).status == "running"
    assert sup.create(spec_for("y")).status == "queued"
    changed = sup.poll()
    assert [(j.id, j.status) for j in changed] == [("y", "running")]
    for task_id in ("x", "y"):
        assert wait_for(sup, task_id, ended).status == "completed"


def gpus_given(job: Job) -> list[dict[str, str | None]]:
    lines = (job.output_dir / "gpus.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_one_job_per_gpu_least_busy_first_and_pinned_jobs_wait(
    supervisors, spec_for, modes
) -> None:
    gib = 1024**3
    sup = supervisors(gpus=[Device(0, 20 * gib), Device(1, 70 * gib)])
    for task_id in ("a", "b", "c", "d"):
        modes[task_id] = "hang"
    a = sup.submit(spec_for("a"))
    b = sup.submit(spec_for("b"))
    assert (a.gpus, b.gpus) == ((1,), (0,))  # most free memory first, then the other
    assert a.placement == "GPU 1"
    wait_for(sup, "a", stepping)
    given = gpus_given(sup.get("a"))
    assert given == [{"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}]
    pinned = sup.submit(spec_for("d").with_changes(gpus=[1]))
    assert sup.submit(spec_for("c")).status == "queued"
    assert pinned.status == "queued" and pinned.gpus is None
    sup.cancel("b", grace_seconds=10)  # GPU 0 frees: c takes it, d still waits for GPU 1
    assert (sup.get("c").status, sup.get("c").gpus) == ("running", (0,))
    assert sup.get("d").status == "queued"
    sup.cancel("a", grace_seconds=10)
    assert (sup.get("d").status, sup.get("d").gpus) == ("running", (1,))
    for task_id in ("c", "d"):
        assert sup.cancel(task_id, grace_seconds=10).status == "cancelled"
    assert "starting on GPU 1" in (sup.get("d").output_dir / "train.log").read_text()


def test_job_pinned_to_a_missing_gpu_is_refused_before_it_exists(
    supervisors, spec_for, paths
) -> None:
    gpus = [Device(0, 1), Device(1, 1)]
    sup = supervisors(gpus=gpus)
    with pytest.raises(JobError, match=r"far: .*GPU 5, which .* \(GPUs here: 0,1\)"):
        sup.submit(spec_for("far").with_changes(gpus=[5]))
    assert sup.list() == [] and not paths.job_dir("far").exists()
    with pytest.raises(JobError, match="this host has no usable GPU"):
        supervisors().submit(spec_for("none").with_changes(gpus=[0]))
    # A GPU that vanishes while the job waits (a driver reset) fails the job when it comes up.
    first = sup.submit(spec_for("first").with_changes(gpus=[1]))
    assert first.status == "running"
    sup.submit(spec_for("later").with_changes(gpus=[1]))
    gpus.pop()
    sup.cancel("first", grace_seconds=10)
    job = sup.get("later")
    assert job.status == "failed" and "GPUs here: 0" in job.error and job.pid is None


def test_two_jobs_share_a_gpu_when_the_user_allows(supervisors, spec_for, modes) -> None:
    sup = supervisors(jobs_per_device=2, gpus=[Device(0, 1)])
    modes["p"] = modes["q"] = "hang"
    assert sup.submit(spec_for("p")).gpus == (0,)
    assert sup.submit(spec_for("q")).gpus == (0,)
    assert sup.submit(spec_for("r")).status == "queued"
    for task_id in ("p", "q"):
        sup.cancel(task_id, grace_seconds=10)
    assert wait_for(sup, "r", ended).status == "completed"


def test_cpu_jobs_see_no_gpu(sup: Supervisor, spec_for) -> None:
    job = wait_for(sup, sup.submit(spec_for("cpu")).id, ended)
    assert job.gpus == () and job.placement == "CPU"
    given = gpus_given(job)[0]
    assert given["CUDA_VISIBLE_DEVICES"] == ""
    assert given["CUDA_DEVICE_ORDER"] == os.environ.get("CUDA_DEVICE_ORDER")
