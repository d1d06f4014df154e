"""Where queued jobs run: the queue's rules, without GPUs."""

from __future__ import annotations

import pytest

from sage_tui.core.training.placement import (
    CPU,
    Device,
    PlacementError,
    describe,
    parse_gpus,
    place,
)

GIB = 1024**3
TWO = [Device(0, 10 * GIB), Device(1, 60 * GIB)]


def test_cpu_host_runs_as_many_jobs_as_allowed() -> None:
    assert place([], [], [], 1) == CPU
    assert place([], [], [CPU], 1) is None
    assert place([], [], [CPU], 2) == CPU


def test_unpinned_job_takes_the_least_busy_then_freest_gpu() -> None:
    assert place([], TWO, [], 1) == (1,)
    assert place([], TWO, [(1,)], 1) == (0,)
    assert place([], TWO, [(0,), (1,)], 1) is None
    assert place([], TWO, [(1,)], 2) == (0,)  # idle GPU before a shared one
    assert place([], TWO, [(0, 1)], 1) is None  # a two-GPU job holds both


def test_pinned_job_waits_for_its_gpus_only() -> None:
    assert place([0], TWO, [(1,)], 1) == (0,)
    assert place([1], TWO, [(1,)], 1) is None
    assert place([1, 0], TWO, [], 1) == (0, 1)
    assert place([0, 1], TWO, [(0,)], 2) == (0, 1)


def test_pinned_to_missing_gpu_is_an_error_naming_both() -> None:
    with pytest.raises(PlacementError, match=r"GPU 3,4, which .* \(GPUs here: 0,1\)"):
        place([3, 1, 4], TWO, [], 1)
    with pytest.raises(PlacementError, match="no usable GPU"):
        place([0], [], [], 1)


def test_gpus_the_users_limit_hides_are_never_used_and_pinning_to_one_says_so() -> None:
    # CUDA_VISIBLE_DEVICES=1,3 on a four-GPU host; the hidden GPUs have the most free memory.
    limit = "CUDA_VISIBLE_DEVICES='1,3'"
    devices = [
        Device(0, 80 * GIB, limit),
        Device(1, GIB),
        Device(2, 80 * GIB, limit),
        Device(3, GIB),
    ]
    with pytest.raises(
        PlacementError,
        match=r"GPU 2, which CUDA_VISIBLE_DEVICES='1,3' hides from the studio"
        r" \(GPUs it may use: 1,3\)",
    ):
        place([2], devices, [], 1)
    assert place([3], devices, [], 1) == (3,)
    assert place([], devices, [], 1) == (1,)
    assert place([], devices, [(1,)], 1) == (3,)
    assert place([], devices, [(1,), (3,)], 1) is None
    with pytest.raises(PlacementError, match=r"GPU 0, which .* hides .*: none\)"):
        place([0], [Device(0, GIB, "CUDA_VISIBLE_DEVICES=''")], [], 1)
    # Every GPU hidden: jobs run on the CPU, as CUDA would run them.
    assert place([], [Device(0, GIB, "CUDA_VISIBLE_DEVICES=''")], [], 1) == CPU


def test_placement_in_words() -> None:
    assert [describe(None), describe(CPU), describe((2,)), describe((0, 1))] == [
        "",
        "CPU",
        "GPU 2",
        "GPU 0,1",
    ]


def test_gpus_typed_by_users() -> None:
    assert parse_gpus("") == [] and parse_gpus(" any ") == []
    assert parse_gpus("1") == [1] and parse_gpus("2, 0") == [2, 0]
    for bad, reason in (
        ("gpu1", "expected GPU numbers"),
        ("0,0", "named twice"),
        ("-1", "expected GPU numbers"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_gpus(bad)
