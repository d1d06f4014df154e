"""The user's CUDA_VISIBLE_DEVICES on a shared four-GPU server (fake NVML): which GPUs the
studio sees, what its children get, and that starting an engine never narrows the queue."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from types import ModuleType, SimpleNamespace

import pytest

from sage_tui.core import gpu_scope
from sage_tui.core.child_env import outer_environ, temporary_environ
from sage_tui.core.engines.base import Delta, Engine, EngineConfig
from sage_tui.core.engines.hardware import hardware_from_snapshot
from sage_tui.core.engines.manager import EngineManager
from sage_tui.core.engines.vllm_engine import VllmEngine
from sage_tui.core.gpu import ResourceMonitor
from sage_tui.core.gpu_scope import GpuScope, parse_visible_devices
from sage_tui.core.training import processes
from sage_tui.core.training.processes import HostDevices, start_keeper
from sage_tui.core.training.supervisor import JobError, Supervisor
from sage_tui.errors import SageError
from tests.support.fake_nvml import FakeMig, FakeNvml, NVMLError, four_gpus
from tests.support.supervising import ended, fake_command, wait_for

UUIDS = [gpu.uuid for gpu in four_gpus()]
CUDA_VARS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "VLLM_CPU_KVCACHE_SPACE")


@pytest.fixture
def user_env(monkeypatch: pytest.MonkeyPatch):
    """Sets the user's CUDA variables (None: unset) as they were when the studio started."""
    monkeypatch.setattr(gpu_scope, "_startup", None)

    def set_env(visible: str | None, order: str | None = None) -> None:
        monkeypatch.setattr(gpu_scope, "_startup", None)  # captured again, from these
        for name, value in (("CUDA_VISIBLE_DEVICES", visible), ("CUDA_DEVICE_ORDER", order)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)

    return set_env


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """Four GPUs behind `import pynvml` (free: 80, 70, 60, 50 GiB); GPU 2 has a MIG instance."""
    gpus = four_gpus()
    gpus[2].migs = [FakeMig("MIG-2222bbbb-0000-4000-8000-000000000000")]
    fake = FakeNvml(gpus)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """vLLM's two entry points; `seen` is the environment its EngineCore child would get."""
    seen: dict[str, str | None] = {}
    state = SimpleNamespace(seen=seen, fail=False)

    class AsyncLLM:
        @classmethod
        def from_engine_args(cls, args):
            seen.update({name: os.environ.get(name) for name in CUDA_VARS})
            if state.fail:
                raise RuntimeError("CUDA error: out of memory")
            return SimpleNamespace(get_tokenizer=lambda: None)

    for name in ("vllm", "vllm.engine", "vllm.v1", "vllm.v1.engine"):
        monkeypatch.setitem(sys.modules, name, ModuleType(name))
    args = ModuleType("vllm.engine.arg_utils")
    args.AsyncEngineArgs = lambda **kwargs: SimpleNamespace(**kwargs)
    llm = ModuleType("vllm.v1.engine.async_llm")
    llm.AsyncLLM = AsyncLLM
    monkeypatch.setitem(sys.modules, "vllm.engine.arg_utils", args)
    monkeypatch.setitem(sys.modules, "vllm.v1.engine.async_llm", llm)
    return state


def start_vllm(**config) -> None:
    """Start the vLLM engine (fake vLLM) on a config with `config`."""
    engine = VllmEngine(EngineConfig("m", "/models/m", 2048, 16, **config))
    asyncio.run(engine.start())


def visible(value: str | None, fake: FakeNvml) -> list[int]:
    snapshot = ResourceMonitor(nvml=fake, scope=GpuScope(value)).sample()
    return [gpu.index for gpu in GpuScope(value).visible(snapshot.gpus)]


# --- reading CUDA_VISIBLE_DEVICES ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        (None, None),
        ("", ()),  # hides every GPU
        ("-1", ()),
        ("1,3", (1, 3)),
        (" 3 , 1 ", (3, 1)),
        ("1gpu,2", (1, 2)),  # read like strtoul
        ("0,x,2", (0,)),  # CUDA stops at the first entry it cannot read
        ("0,,2", (0,)),
        ("0,-1,2", (0,)),
        ("1,1", ()),  # a GPU named twice hides every GPU
        ("GPU-aa, GPU-bb", ("GPU-aa", "GPU-bb")),
        ("MIG-GPU-aa/1/0,MIG-cc", ("MIG-GPU-aa/1/0", "MIG-cc")),
        ("0,GPU-aa", (0,)),  # mixed kinds: the list ends where the kind changes
        ("GPU-aa,1,GPU-bb", ("GPU-aa",)),
        ("GPU-,GPU-aa", ()),
    ],
)
def test_cuda_visible_devices_is_read_by_cudas_rules(value, tokens) -> None:
    assert parse_visible_devices(value) == tokens


@pytest.mark.parametrize(
    ("value", "indices"),
    [
        (None, [0, 1, 2, 3]),
        ("", []),
        ("1,3", [1, 3]),
        ("3,1", [1, 3]),  # NVML order
        ("1,7,3", [1]),  # a number past the last GPU ends the list
        (f"{UUIDS[3]},{UUIDS[1]}", [1, 3]),
        ("GPU-2222", [2]),  # a unique prefix, as CUDA allows
        (f"{UUIDS[1]},GPU-dead,{UUIDS[3]}", [1]),  # an unknown UUID ends the list
        (f"{UUIDS[1]},{UUIDS[1][:12]}", []),  # the same GPU twice
        ("MIG-2222bbbb-0000-4000-8000-000000000000", [2]),
        (f"MIG-{UUIDS[3]}/1/0", [3]),  # the old MIG form names its parent
        ("1,GPU-0000", [1]),
    ],
)
def test_visible_gpus_of_a_four_gpu_server(value, indices, host: FakeNvml) -> None:
    assert visible(value, host) == indices


def test_children_get_the_users_own_names(host: FakeNvml) -> None:
    prefix = UUIDS[3][:12]
    by_uuid = GpuScope(f"{prefix},{UUIDS[1]}")
    by_uuid.visible(ResourceMonitor(nvml=host, scope=by_uuid).sample().gpus)
    assert by_uuid.child_value([1, 3]) == f"{UUIDS[1]},{prefix}"  # untouched, prefix too
    assert by_uuid.child_env([3]) == {
        "CUDA_VISIBLE_DEVICES": prefix,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    with pytest.raises(SageError, match="GPU 2 is not among the GPUs CUDA_VISIBLE_DEVICES="):
        by_uuid.child_value([2])
    assert GpuScope("1,3").child_value([3]) == "3"
    assert GpuScope(None).child_env([2]) == {
        "CUDA_VISIBLE_DEVICES": "2",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    assert GpuScope("1,3").child_env([]) == {"CUDA_VISIBLE_DEVICES": ""}  # a CPU job
    mig = GpuScope("MIG-2222bbbb-0000-4000-8000-000000000000")
    mig.visible(ResourceMonitor(nvml=host, scope=mig).sample().gpus)
    assert mig.child_value([2]) == "MIG-2222bbbb-0000-4000-8000-000000000000"


def test_base_env_is_the_users_view() -> None:
    narrowed = {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert GpuScope("0,2,3").base_env(narrowed) == {
        "PATH": "/bin",
        "CUDA_VISIBLE_DEVICES": "0,2,3",
    }
    assert GpuScope(None, "FASTEST_FIRST").base_env(narrowed) == {
        "PATH": "/bin",
        "CUDA_DEVICE_ORDER": "FASTEST_FIRST",
    }


# --- changing os.environ for a child, and only while it starts ---------------------------------


def test_temporary_environ_restores_added_changed_and_absent_keys(monkeypatch) -> None:
    monkeypatch.setenv("SAGE_T_CHANGED", "before")
    monkeypatch.setenv("SAGE_T_REMOVED", "here")
    monkeypatch.delenv("SAGE_T_ADDED", raising=False)
    before = dict(os.environ)
    changes = {"SAGE_T_CHANGED": "during", "SAGE_T_REMOVED": None, "SAGE_T_ADDED": "new"}
    with temporary_environ(changes):
        assert os.environ["SAGE_T_CHANGED"] == "during" and os.environ["SAGE_T_ADDED"] == "new"
        assert "SAGE_T_REMOVED" not in os.environ
        assert outer_environ() == before  # what other threads start children with
    assert dict(os.environ) == before
    with pytest.raises(RuntimeError, match="boom"), temporary_environ(changes):
        raise RuntimeError("boom")
    assert dict(os.environ) == before


def test_temporary_environ_serialises_threads(monkeypatch) -> None:
    monkeypatch.delenv("SAGE_T_OWNER", raising=False)
    inside, seen = threading.Event(), []

    def second() -> None:
        with temporary_environ({"SAGE_T_OWNER": "second"}):
            seen.append(os.environ["SAGE_T_OWNER"])

    with temporary_environ({"SAGE_T_OWNER": "first"}):
        inside.set()
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        assert seen == [] and os.environ["SAGE_T_OWNER"] == "first"  # still waiting
    thread.join(5)
    assert seen == ["second"] and "SAGE_T_OWNER" not in os.environ


def test_starting_vllm_leaves_the_studios_environment_alone(user_env, fake_vllm) -> None:
    user_env("1,3")
    before = dict(os.environ)
    start_vllm(gpu_indices=(3,))
    assert fake_vllm.seen == {
        "CUDA_VISIBLE_DEVICES": "3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "VLLM_CPU_KVCACHE_SPACE": None,
    }
    assert dict(os.environ) == before
    fake_vllm.fail = True
    with pytest.raises(SageError, match="out of memory"):
        start_vllm(cpu_kv_cache_gib=6)
    assert fake_vllm.seen["VLLM_CPU_KVCACHE_SPACE"] == "6"
    assert fake_vllm.seen["CUDA_VISIBLE_DEVICES"] == "1,3"  # a CPU engine: the user's view
    assert dict(os.environ) == before
    fake_vllm.fail = False
    start_vllm(gpu_indices=(1,), cuda_visible_devices=UUIDS[1])  # the user named GPUs by UUID
    assert fake_vllm.seen["CUDA_VISIBLE_DEVICES"] == UUIDS[1]
    assert dict(os.environ) == before


# --- the engine plans inside the scope, and refuses to guess -----------------------------------


class RecordingEngine(Engine):
    kind = "fake"
    configs: list[EngineConfig] = []

    async def start(self) -> None:
        RecordingEngine.configs.append(self.config)

    def prompt_ids(self, messages) -> list[int]:
        return [1]

    async def stream(self, prompt_ids, sampling, adapter, request_id) -> AsyncIterator[Delta]:
        yield Delta("", 0, "stop")

    async def abort(self, request_id: str) -> None:
        pass

    async def shutdown(self) -> None:
        pass


async def test_the_engine_plans_on_visible_gpus_named_as_the_user_named_them(
    user_env, host: FakeNvml, provisioned_services
) -> None:
    # GPUs 0 and 2 have the most free memory, but the user gave the studio 3 and 1.
    prefix = UUIDS[1][:13]
    user_env(f"{UUIDS[3]},{prefix}")
    monitor = ResourceMonitor()
    hardware = hardware_from_snapshot(monitor.sample())
    assert [gpu.index for gpu in hardware.gpus] == [1, 3]
    RecordingEngine.configs = []
    engines = EngineManager(
        provisioned_services.registry,
        lambda: hardware_from_snapshot(monitor.sample()),
        engine_kind="transformers",
        engine_factory=lambda kind, config: RecordingEngine(config),
    )
    await engines.ensure_loaded()
    (config,) = RecordingEngine.configs
    assert config.gpu_indices == (1,)
    assert config.cuda_visible_devices == prefix


def test_an_unreadable_gpu_machine_is_not_planned_for_the_cpu(user_env, host) -> None:
    user_env(None)
    host.init_error = NVMLError("Insufficient Permissions")
    with pytest.raises(
        SageError,
        match=r"^cannot read this machine's GPUs \(NVML failed to start: Insufficient"
        r" Permissions\): the engine is not started on a guess$",
    ):
        hardware_from_snapshot(ResourceMonitor().sample())


# --- the queue places inside the scope, whatever the engine did --------------------------------


def queue(store, paths, modes) -> Supervisor:
    return Supervisor(store, paths, runner_command=fake_command(modes), devices=HostDevices())


def gpus_given(job) -> list[dict[str, str | None]]:
    lines = (job.output_dir / "gpus.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_queue_places_only_on_visible_gpus(user_env, host, store, paths, spec_for) -> None:
    user_env(f"{UUIDS[1]},{UUIDS[3]}")
    sup = queue(store, paths, {})
    with pytest.raises(JobError, match=r"GPU 2, which CUDA_VISIBLE_DEVICES='GPU-.*' hides"):
        sup.submit(spec_for("hidden").with_changes(gpus=[2]))
    first = wait_for(sup, sup.submit(spec_for("first")).id, ended)
    assert first.gpus == (1,)  # GPU 0 has more free memory, but it is not the studio's
    assert gpus_given(first) == [
        {"CUDA_VISIBLE_DEVICES": UUIDS[1], "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    ]


def test_jobs_pinned_to_other_gpus_start_after_the_engine_took_one(
    user_env, host, fake_vllm, store, paths, spec_for
) -> None:
    user_env(None)
    start_vllm(gpu_indices=(1,))  # the planner put the engine on GPU 1
    sup = queue(store, paths, {})
    job = wait_for(sup, sup.submit(spec_for("pinned").with_changes(gpus=[2])).id, ended)
    assert (job.status, job.gpus) == ("completed", (2,))
    assert gpus_given(job)[0]["CUDA_VISIBLE_DEVICES"] == "2"
    unpinned = wait_for(sup, sup.submit(spec_for("any")).id, ended)
    assert unpinned.gpus == (0,)  # the freest GPU: the engine's is not the only one


def test_the_keeper_sees_the_users_gpus(
    user_env, host, fake_vllm, paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_env("0,2,3")
    start_vllm(gpu_indices=(2,))
    started: list[dict[str, str]] = []

    def popen(command, **kwargs):
        started.append(kwargs["env"])
        return SimpleNamespace(pid=0)

    monkeypatch.setattr(processes.subprocess, "Popen", popen)
    assert start_keeper(paths, 1)
    with temporary_environ({"CUDA_VISIBLE_DEVICES": "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}):
        start_keeper(paths, 1)  # while an engine is being started
    for env in started:
        assert env["CUDA_VISIBLE_DEVICES"] == "0,2,3" and "CUDA_DEVICE_ORDER" not in env


def test_unreadable_gpus_keep_jobs_queued_and_say_why(
    user_env, host, store, paths, spec_for
) -> None:
    user_env(None)
    host.init_error = NVMLError("Insufficient Permissions")
    sup = queue(store, paths, {})
    job = sup.submit(spec_for("waits"))
    assert (job.status, job.gpus) == ("queued", None)
    assert job.error == (
        "cannot read this machine's GPUs (NVML failed to start: Insufficient Permissions)"
    )
    host.init_error = None  # the driver is back
    sup.poll()
    job = wait_for(sup, "waits", ended)
    assert (job.status, job.gpus, job.error) == ("completed", (0,), None)


def test_a_pinned_job_waits_too_while_the_gpus_cannot_be_read(
    user_env, host, store, paths, spec_for
) -> None:
    user_env(None)
    host.init_error = NVMLError("Unknown Error")
    job = queue(store, paths, {}).submit(spec_for("pinned").with_changes(gpus=[2]))
    assert job.status == "queued" and "NVML failed to start: Unknown Error" in job.error


def test_a_lost_visible_gpu_is_not_the_cpu(user_env, host, store, paths, spec_for) -> None:
    user_env("1")
    host.gpus[1].lost = True
    job = queue(store, paths, {}).submit(spec_for("lost"))
    assert job.status == "queued" and "NVML could not read GPU 1" in job.error


def test_the_scope_is_captured_once(user_env, monkeypatch: pytest.MonkeyPatch) -> None:
    user_env("1")
    first = gpu_scope.startup_scope()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpu_scope.startup_scope() is first and first.raw == "1"
