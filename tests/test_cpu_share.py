"""Sharing a CPU host's cores between the engine and training runners."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sage_tui.core import cpu_share
from sage_tui.core.cpu_share import (
    NO_SHARE,
    TRAIN_CPUS_ENV,
    VLLM_BIND_ENV,
    CpuShare,
    apply_engine_threads,
    apply_runner_share,
    engine_env,
    engine_threads,
    format_cpus,
    parse_cpus,
    runner_env,
    share_cpus,
)


@pytest.mark.parametrize(
    ("cpus", "gpu", "engine", "jobs", "expected"),
    [
        # the project's machine: one core each
        ([0, 1], False, True, True, CpuShare((0,), (1,))),
        # one core: nothing to split
        ([0], False, True, True, NO_SHARE),
        # GPU hosts: the heavy work is on the GPUs
        ([0, 1, 2, 3], True, True, True, NO_SHARE),
        # only one side runs: it may use every core
        ([0, 1], False, True, False, NO_SHARE),
        ([0, 1], False, False, True, NO_SHARE),
        ([0, 1], False, False, False, NO_SHARE),
        # odd counts: the runner (the steadier load) gets the larger half
        ([0, 1, 2], False, True, True, CpuShare((0,), (1, 2))),
        ([0, 1, 2, 3], False, True, True, CpuShare((0, 1), (2, 3))),
        (range(16), False, True, True, CpuShare(tuple(range(8)), tuple(range(8, 16)))),
        # a restricted affinity mask (taskset, containers): only the allowed cores count
        ([5, 3, 3, 9], False, True, True, CpuShare((3,), (5, 9))),
    ],
)
def test_share_cpus(cpus, gpu, engine, jobs, expected) -> None:
    assert share_cpus(cpus, gpu=gpu, engine=engine, jobs=jobs) == expected


@pytest.mark.parametrize(
    ("cpus", "text"),
    [((0,), "0"), ((0, 1), "0-1"), ((0, 1, 2, 5), "0-2,5"), ((7, 3, 4), "3-4,7"), ((), "")],
)
def test_cpu_lists_are_written_as_linux_and_vllm_read_them(cpus, text) -> None:
    assert format_cpus(cpus) == text
    if cpus:
        assert parse_cpus(text) == tuple(sorted(cpus))


@pytest.mark.parametrize("bad", ["", ",", "x", "3-1", "-1", "0-", "1-2-3"])
def test_bad_cpu_lists_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="CPU"):
        parse_cpus(bad)


def test_child_environments_on_two_cores() -> None:
    assert runner_env(gpu=False, engine=True, cpus=[0, 1], env={}) == {TRAIN_CPUS_ENV: "1"}
    assert runner_env(gpu=False, engine=False, cpus=[0, 1], env={}) == {}
    assert runner_env(gpu=True, engine=True, cpus=[0, 1], env={}) == {}
    # vLLM binds once, at start: it keeps to its share even before any job runs
    assert engine_env(gpu=False, cpus=[0, 1], env={}) == {VLLM_BIND_ENV: "0"}
    assert engine_env(gpu=False, cpus=range(8), env={}) == {VLLM_BIND_ENV: "0-3"}
    assert engine_env(gpu=True, cpus=[0, 1], env={}) == {}
    assert engine_env(gpu=False, cpus=[0], env={}) == {}
    assert engine_threads(gpu=False, jobs=True, cpus=[0, 1]) == 1
    assert engine_threads(gpu=False, jobs=False, cpus=[0, 1]) is None


def test_a_users_own_setting_wins() -> None:
    assert runner_env(gpu=False, engine=True, cpus=[0, 1], env={TRAIN_CPUS_ENV: "0-1"}) == {}
    assert engine_env(gpu=False, cpus=[0, 1], env={VLLM_BIND_ENV: "nobind"}) == {}


def test_runner_share_pins_the_process_and_sizes_its_threads(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(cpu_share, "allowed_cpus", lambda: (0, 1, 2, 3))
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setenv("MKL_NUM_THREADS", "8")
    used = apply_runner_share(
        {TRAIN_CPUS_ENV: "1-2,7"}, set_affinity=lambda pid, cpus: calls.append((pid, cpus))
    )
    assert used == (1, 2)  # core 7 is not ours to use
    assert calls == [(0, (1, 2))]
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "2"


def test_runner_share_unset_changes_nothing() -> None:
    assert apply_runner_share({}, set_affinity=lambda *_: pytest.fail("pinned")) is None


def test_runner_share_naming_no_usable_core_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(cpu_share, "allowed_cpus", lambda: (0, 1))
    with pytest.raises(ValueError, match=TRAIN_CPUS_ENV):
        apply_runner_share({TRAIN_CPUS_ENV: "5"}, set_affinity=lambda *_: None)


def test_an_in_process_engine_gets_its_share_of_threads(monkeypatch) -> None:
    class FakeTorch:
        threads = 0

        def set_num_threads(self, n: int) -> None:
            self.threads = n

    torch = FakeTorch()
    monkeypatch.setattr(cpu_share, "allowed_cpus", lambda: (0, 1))
    monkeypatch.setitem(cpu_share.sys.modules, "torch", torch)
    assert apply_engine_threads(engine_threads(gpu=False, jobs=True, cpus=[0, 1])) == 1
    assert torch.threads == 1
    assert apply_engine_threads(engine_threads(gpu=False, jobs=False, cpus=[0, 1])) == 2
    assert torch.threads == 2
    monkeypatch.delitem(cpu_share.sys.modules, "torch")
    assert apply_engine_threads(1) is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity")
def test_the_runner_honours_its_share_before_training(monkeypatch, tmp_path: Path) -> None:
    """The real runner entry point, with training replaced: it runs pinned, one thread."""
    from sage_tui.core.training import runner

    before = os.sched_getaffinity(0)
    core = min(before)
    seen = {}

    def fake_train(job_dir, resume, events) -> int:
        seen["cpus"] = os.sched_getaffinity(0)
        seen["threads"] = os.environ["OMP_NUM_THREADS"]
        return 0

    monkeypatch.setattr(runner, "train", fake_train)
    monkeypatch.setenv(TRAIN_CPUS_ENV, str(core))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: one worker, no torch import
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    monkeypatch.setenv("MKL_NUM_THREADS", "")
    try:
        assert runner.main([str(tmp_path)]) == 0
    finally:
        os.sched_setaffinity(0, before)
    assert seen == {"cpus": {core}, "threads": "1"}


def test_the_studio_gives_runners_and_engine_their_cores(services, monkeypatch) -> None:
    """Wired where children start: a runner spawned while a CPU engine serves gets the upper
    cores, vLLM's EngineCore the lower ones; a GPU job or no engine: no restriction."""
    from sage_tui.core.engines.base import EngineConfig
    from sage_tui.core.engines.vllm_engine import child_environ

    monkeypatch.delenv(cpu_share.TRAIN_CPUS_ENV, raising=False)
    monkeypatch.delenv(cpu_share.VLLM_BIND_ENV, raising=False)
    monkeypatch.setattr(cpu_share, "allowed_cpus", lambda: (0, 1, 2, 3))
    engines, supervisor = services.engines, services.supervisor
    assert supervisor.runner_env(()) == {}  # no engine runs
    monkeypatch.setattr(type(engines), "engine_on_cpu", property(lambda self: True))
    assert supervisor.runner_env(()) == {cpu_share.TRAIN_CPUS_ENV: "2-3"}
    assert supervisor.runner_env((0,)) == {}  # a GPU job
    cpu = EngineConfig("m", "/m", max_model_len=2048, max_lora_rank=16, cpu_kv_cache_gib=1)
    assert child_environ(cpu)[cpu_share.VLLM_BIND_ENV] == "0-1"
    gpu = EngineConfig("m", "/m", max_model_len=2048, max_lora_rank=16, gpu_indices=(0,))
    assert cpu_share.VLLM_BIND_ENV not in child_environ(gpu)


def test_a_runner_is_started_with_its_share(store, paths, spec_for, tmp_path) -> None:
    import sys

    from sage_tui.core.training.supervisor import Supervisor

    def command(job_dir, resume):
        code = "import os, sys; open(sys.argv[1], 'w').write(os.environ['SAGE_TRAIN_CPUS'])"
        return [sys.executable, "-c", code, str(job_dir / "seen")]

    supervisor = Supervisor(
        store,
        paths,
        runner_command=command,
        devices=lambda: [],
        runner_env=lambda gpus: {cpu_share.TRAIN_CPUS_ENV: "1"},
    )
    job = supervisor.submit(spec_for("shared"))
    seen = job.output_dir / "seen"
    for _ in range(100):
        if seen.exists() and seen.read_text():
            break
        import time

        time.sleep(0.05)
    assert seen.read_text() == "1"


async def test_an_in_process_engine_keeps_to_its_share_while_a_cpu_job_runs(
    provisioned_services, monkeypatch
) -> None:
    """The transformers engine computes in the studio's process: while the studio sees a job
    running on the CPU, each reply gets the engine's share of the threads."""
    from sage_tui.studio import Studio

    monkeypatch.setattr(cpu_share, "allowed_cpus", lambda: (0, 1, 2, 3))
    studio = Studio(provisioned_services)
    await studio.engine.start(raise_errors=True)
    engine = provisioned_services.engines._engine
    assert engine.reply_threads() is None  # no job: every core
    provisioned_services.engines.cpu_jobs_running = True
    assert engine.reply_threads() == 2
