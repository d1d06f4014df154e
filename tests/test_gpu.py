"""Tests for sage_tui.core.gpu: NVML sampling through a fake library, the real
no-driver path, the lazy-import promise and format_bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sage_tui.core.gpu import (
    NVML_VALUE_NOT_AVAILABLE,
    GpuProcess,
    GpuSample,
    ResourceMonitor,
    ResourceSnapshot,
    format_bytes,
)
from sage_tui.core.gpu_scope import GpuScope
from tests.support.fake_nvml import (
    FakeGpu,
    FakeMig,
    FakeNvml,
    NVMLError,
    NVMLError_DriverNotLoaded,
    NVMLError_GpuIsLost,
    NVMLError_LibraryNotFound,
)

GIB = 1024**3
MIB = 1024**2
# Above Linux's largest possible pid_max (2**22), so no process can have it.
MISSING_PID = 2**22 + 7


def _this_process_name() -> str:
    import psutil

    return psutil.Process(os.getpid()).name()


# --- sampling through the fake -------------------------------------------------


def test_two_gpus_give_exact_figures() -> None:
    fake = FakeNvml(
        gpus=[
            FakeGpu(name="NVIDIA H100 80GB HBM3", used=12 * GIB, total=80 * GIB, utilization=87),
            FakeGpu(name=b"NVIDIA A10G", used=512 * MIB, total=24 * GIB, utilization=3),
        ]
    )
    with ResourceMonitor(nvml=fake, clock=lambda: 1234.5) as monitor:
        snap = monitor.sample()
        assert monitor.no_gpu_reason is None

    assert isinstance(snap, ResourceSnapshot)
    assert snap.no_gpu_reason is None
    assert snap.taken_at == 1234.5
    assert snap.gpus == (
        GpuSample(
            index=0,
            name="NVIDIA H100 80GB HBM3",
            memory_used=12 * GIB,
            memory_total=80 * GIB,
            memory_free=68 * GIB,
            utilization=87,
            processes=(),
        ),
        GpuSample(
            index=1,
            name="NVIDIA A10G",
            memory_used=512 * MIB,
            memory_total=24 * GIB,
            memory_free=24 * GIB - 512 * MIB,
            utilization=3,
            processes=(),
        ),
    )
    assert snap.cpu_count >= 1
    assert 0.0 <= snap.cpu_percent <= 100.0
    assert 0 < snap.ram_used <= snap.ram_total
    assert fake.init_calls == 1


def test_processes_with_known_and_unknown_memory() -> None:
    me = os.getpid()
    fake = FakeNvml(
        gpus=[
            FakeGpu(
                used=30 * GIB,
                compute=[
                    (MISSING_PID, None),
                    (me, 20 * GIB),
                    (MISSING_PID + 1, NVML_VALUE_NOT_AVAILABLE),
                    (MISSING_PID + 2, 4 * GIB),
                ],
                # Same process seen again through its graphics context.
                graphics=[(me, 20 * GIB), (MISSING_PID, 2 * GIB)],
            )
        ]
    )
    with ResourceMonitor(nvml=fake) as monitor:
        (gpu,) = monitor.sample().gpus

    assert gpu.processes == (
        GpuProcess(pid=me, used_bytes=20 * GIB, name=_this_process_name()),
        GpuProcess(pid=MISSING_PID + 2, used_bytes=4 * GIB, name=""),
        # Unknown in the compute list, known in the graphics list: the known figure wins.
        GpuProcess(pid=MISSING_PID, used_bytes=2 * GIB, name=""),
        GpuProcess(pid=MISSING_PID + 1, used_bytes=None, name=""),
    )


def test_process_list_errors_leave_memory_figures() -> None:
    fake = FakeNvml(gpus=[FakeGpu(used=GIB, processes_fail=True)])
    with ResourceMonitor(nvml=fake) as monitor:
        (gpu,) = monitor.sample().gpus
    assert gpu.processes == ()
    assert gpu.memory_used == GIB


def test_utilisation_not_supported_is_none() -> None:
    fake = FakeNvml(gpus=[FakeGpu(utilization=None, used=GIB)])
    with ResourceMonitor(nvml=fake) as monitor:
        (gpu,) = monitor.sample().gpus
    assert gpu.utilization is None
    assert gpu.memory_used == GIB


def test_lost_gpu_does_not_hide_the_others() -> None:
    fake = FakeNvml(
        gpus=[
            FakeGpu(name="GPU zero", used=GIB),
            FakeGpu(name="GPU one", used=2 * GIB),
            FakeGpu(name="GPU two", used=3 * GIB),
        ]
    )
    with ResourceMonitor(nvml=fake) as monitor:
        assert len(monitor.sample().gpus) == 3
        fake.gpus[1].lost = True
        snap = monitor.sample()
    assert [(g.index, g.name, g.memory_used) for g in snap.gpus] == [
        (0, "GPU zero", GIB),
        (2, "GPU two", 3 * GIB),
    ]
    assert snap.no_gpu_reason is None


def test_every_gpu_lost_gives_a_reason() -> None:
    fake = FakeNvml(gpus=[FakeGpu(lost=True)])
    with ResourceMonitor(nvml=fake) as monitor:
        snap = monitor.sample()
    assert snap.gpus == ()
    assert snap.no_gpu_reason is not None
    assert "GPU is lost" in snap.no_gpu_reason


def test_library_not_found_means_no_driver_but_host_figures() -> None:
    fake = FakeNvml(
        gpus=[FakeGpu()], init_error=NVMLError_LibraryNotFound("NVML Shared Library Not Found")
    )
    monitor = ResourceMonitor(nvml=fake)
    monitor.open()
    snap = monitor.sample()
    monitor.close()

    assert monitor.no_gpu_reason == "no NVIDIA driver found"
    assert snap.gpus == ()
    assert snap.no_gpu_reason == "no NVIDIA driver found"
    assert snap.ram_total > 0
    assert snap.cpu_count >= 1
    assert fake.init_calls == 1
    # NVML never started, so there is nothing to shut down.
    assert fake.shutdown_calls == 0


def test_other_init_error_is_reported() -> None:
    fake = FakeNvml(init_error=NVMLError("Insufficient Permissions"))
    with ResourceMonitor(nvml=fake) as monitor:
        snap = monitor.sample()
    assert snap.gpus == ()
    assert snap.no_gpu_reason == "NVML failed to start: Insufficient Permissions"


def test_count_failing_after_open() -> None:
    fake = FakeNvml(gpus=[FakeGpu()])
    with ResourceMonitor(nvml=fake) as monitor:
        assert len(monitor.sample().gpus) == 1
        fake.count_error = NVMLError_GpuIsLost("GPU is lost")
        snap = monitor.sample()
    assert snap.gpus == ()
    assert snap.no_gpu_reason == "NVML stopped answering: GPU is lost"
    assert snap.ram_total > 0


def test_close_shuts_down_exactly_once() -> None:
    fake = FakeNvml(gpus=[FakeGpu()])
    monitor = ResourceMonitor(nvml=fake)
    monitor.open()
    monitor.open()
    monitor.close()
    monitor.close()
    assert fake.init_calls == 1
    assert fake.shutdown_calls == 1


def test_sample_opens_when_needed() -> None:
    fake = FakeNvml(gpus=[FakeGpu(used=5 * GIB)])
    monitor = ResourceMonitor(nvml=fake)
    try:
        snap = monitor.sample()
        monitor.sample()
    finally:
        monitor.close()
    assert fake.init_calls == 1
    assert snap.gpus[0].memory_used == 5 * GIB


def test_zero_gpus_says_driver_found() -> None:
    fake = FakeNvml(gpus=[])
    with ResourceMonitor(nvml=fake) as monitor:
        snap = monitor.sample()
        assert monitor.no_gpu_reason is None
    assert snap.gpus == ()
    assert snap.no_gpu_reason == "NVIDIA driver found but no GPUs"


def test_missing_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import pynvml` raise ImportError.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with ResourceMonitor() as monitor:
        snap = monitor.sample()
    assert snap.gpus == ()
    assert snap.no_gpu_reason == "nvidia-ml-py is not installed"


# --- the real library on this machine -----------------------------------------


def test_real_pynvml_without_driver() -> None:
    import psutil
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("a real NVIDIA driver is present")

    with ResourceMonitor() as monitor:
        snap = monitor.sample()
    assert snap.gpus == ()
    assert snap.no_gpu_reason == "no NVIDIA driver found"
    assert snap.ram_total == psutil.virtual_memory().total
    assert 0 < snap.ram_used <= snap.ram_total
    assert snap.cpu_count == psutil.cpu_count()
    assert 0.0 <= snap.cpu_percent <= 100.0


def test_import_is_light() -> None:
    heavy = ("pynvml", "psutil", "torch", "textual", "rich")
    code = (
        "import sys\n"
        "import sage_tui.core.gpu\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- format_bytes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (512 * 1024, "512 KiB"),
        (MIB, "1 MiB"),
        (512 * MIB, "512 MiB"),
        (1023 * MIB, "1023 MiB"),
        (GIB - 1, "1.0 GiB"),
        (GIB, "1.0 GiB"),
        (int(12.3 * GIB), "12.3 GiB"),
        (80 * GIB, "80.0 GiB"),
        (85_899_345_920, "80.0 GiB"),
        (1024 * GIB, "1.0 TiB"),
        (-512 * MIB, "-512 MiB"),
    ],
)
def test_format_bytes(n: int, expected: str) -> None:
    assert format_bytes(n) == expected


# --- UUIDs, MIG, and GPUs that are there but cannot be read ------------------

UNSET = GpuScope(None)


def test_uuid_and_mig_ids_are_read_tolerantly() -> None:
    fake = FakeNvml(
        gpus=[
            FakeGpu(uuid="GPU-aaaa"),
            FakeGpu(uuid=b"GPU-bbbb", migs=[FakeMig("MIG-1111"), FakeMig(None)]),
            FakeGpu(uuid=None),  # nvmlDeviceGetUUID fails: the figures still stand
        ]
    )
    with ResourceMonitor(nvml=fake, scope=UNSET) as monitor:
        snap = monitor.sample()
    assert [(g.uuid, g.mig_uuids) for g in snap.gpus] == [
        ("GPU-aaaa", ()),
        ("GPU-bbbb", ("MIG-1111",)),
        ("", ()),
    ]


def test_a_machine_without_gpus_has_no_gpu_error(tmp_path: Path) -> None:
    no_driver = NVMLError_LibraryNotFound("NVML Shared Library Not Found")
    for fake in (FakeNvml(init_error=no_driver), FakeNvml(gpus=[])):
        with ResourceMonitor(nvml=fake, scope=UNSET, driver_gpus=tmp_path / "none") as monitor:
            snap = monitor.sample()
        assert snap.gpus == () and snap.no_gpu_reason and snap.gpu_error is None
    # "" and "-1" hide every GPU: the user asked for the CPU.
    for value in ("", "-1"):
        with ResourceMonitor(nvml=FakeNvml(init_error=no_driver), scope=GpuScope(value)) as m:
            assert m.sample().gpu_error is None


@pytest.mark.parametrize(
    ("fake", "expected"),
    [
        (FakeNvml(init_error=NVMLError("Insufficient Permissions")), "Insufficient Permissions"),
        (FakeNvml(gpus=[FakeGpu()], count_error=NVMLError("Unknown Error")), "Unknown Error"),
        (FakeNvml(gpus=[FakeGpu(lost=True), FakeGpu(lost=True)]), "GPU 1: GPU is lost"),
    ],
)
def test_nvml_failures_on_a_gpu_machine_are_gpu_errors(fake: FakeNvml, expected: str) -> None:
    with ResourceMonitor(nvml=fake, scope=UNSET) as monitor:
        snap = monitor.sample()
    assert snap.gpus == ()
    assert snap.gpu_error is not None and expected in snap.gpu_error


def test_no_driver_while_cuda_visible_devices_names_gpus_is_a_gpu_error() -> None:
    fake = FakeNvml(init_error=NVMLError_DriverNotLoaded("Driver Not Loaded"))
    with ResourceMonitor(nvml=fake, scope=GpuScope("0,1")) as monitor:
        snap = monitor.sample()
    assert snap.no_gpu_reason == "no NVIDIA driver found"
    assert snap.gpu_error == (
        "no NVIDIA driver found, but CUDA_VISIBLE_DEVICES='0,1' names GPUs; unset it to use the CPU"
    )


def test_no_library_while_the_kernel_lists_gpus_is_a_gpu_error(tmp_path: Path) -> None:
    listed, dev = tmp_path / "gpus", tmp_path / "dev"
    for path in (listed / "0000:17:00.0", listed / "0000:65:00.0", dev):
        path.mkdir(parents=True)
    fake = FakeNvml(init_error=NVMLError_LibraryNotFound("NVML Shared Library Not Found"))

    def gpu_error() -> str | None:
        with ResourceMonitor(nvml=fake, scope=UNSET, driver_gpus=listed, dev=dev) as monitor:
            return monitor.sample().gpu_error

    # The host's list seen from a container that was given no GPU: still no GPU here.
    assert gpu_error() is None
    (dev / "nvidia0").touch()
    assert gpu_error() == "no NVIDIA driver found, but the kernel driver lists 2 NVIDIA GPU(s)"


def test_gpus_that_fail_alone_are_listed_as_unread() -> None:
    fake = FakeNvml(gpus=[FakeGpu(), FakeGpu(lost=True), FakeGpu()])
    with ResourceMonitor(nvml=fake, scope=UNSET) as monitor:
        snap = monitor.sample()
    assert [g.index for g in snap.gpus] == [0, 2]
    assert snap.unread_gpus == (1,) and snap.gpu_error is None


def test_nvml_is_started_again_after_a_failure_on_a_gpu_machine() -> None:
    fake = FakeNvml(gpus=[FakeGpu()], init_error=NVMLError("Unknown Error"))
    with ResourceMonitor(nvml=fake, scope=UNSET) as monitor:
        assert monitor.sample().gpu_error == "NVML failed to start: Unknown Error"
        fake.init_error = None
        snap = monitor.sample()
    assert len(snap.gpus) == 1 and snap.gpu_error is None and snap.no_gpu_reason is None
    assert fake.init_calls == 3 and fake.shutdown_calls == 1  # open, then each sample
