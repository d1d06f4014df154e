"""A stand-in for the ``pynvml`` module: GPUs with fixed figures, UUIDs, MIG instances and the
ways NVML fails, so the resource monitor, the GPU scope, the queue and the planner are tested
without GPUs."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

GIB = 1024**3


class NVMLError(Exception):
    """Base error, as pynvml.NVMLError."""


class NVMLError_LibraryNotFound(NVMLError):
    """As pynvml.NVMLError_LibraryNotFound."""


class NVMLError_DriverNotLoaded(NVMLError):
    """As pynvml.NVMLError_DriverNotLoaded."""


class NVMLError_GpuIsLost(NVMLError):
    """As pynvml.NVMLError_GpuIsLost."""


class NVMLError_NotSupported(NVMLError):
    """As pynvml.NVMLError_NotSupported."""


class NVMLError_NotFound(NVMLError):
    """As pynvml.NVMLError_NotFound."""


@dataclass
class FakeMig:
    """One MIG instance of a fake GPU: its memory and the processes on it."""

    uuid: str | None
    used: int = 0
    total: int = 10 * GIB
    compute: list[tuple[int, int | None]] = field(default_factory=list)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    lost: bool = False  # memory queries raise GpuIsLost
    processes_fail: bool = False


@dataclass
class FakeGpu:
    """Figures one fake GPU reports."""

    name: str | bytes = "NVIDIA H100 80GB HBM3"
    used: int = 0
    total: int = 80 * GIB
    utilization: int | None = 0  # None: the device raises NotSupported
    compute: list[tuple[int, int | None]] = field(default_factory=list)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    lost: bool = False  # memory queries raise GpuIsLost
    processes_fail: bool = False  # as an unprivileged caller's query of a MIG GPU's own list
    uuid: str | bytes | None = None  # None: nvmlDeviceGetUUID raises
    migs: list[FakeMig] | None = None  # None: MIG mode off


def four_gpus() -> list[FakeGpu]:
    """Four H100s with distinct UUIDs and free memory 80, 70, 60 and 50 GiB."""
    return [
        FakeGpu(used=i * 10 * GIB, uuid=f"GPU-{i}{i}{i}{i}aaaa-0000-4000-8000-00000000000{i}")
        for i in range(4)
    ]


class FakeNvml:
    """Stand-in for the pynvml module with the functions ResourceMonitor calls."""

    NVMLError = NVMLError
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_GpuIsLost = NVMLError_GpuIsLost

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        init_error: BaseException | None = None,
        count_error: BaseException | None = None,
    ) -> None:
        self.gpus = gpus if gpus is not None else []
        self.init_error = init_error
        self.count_error = count_error
        self.init_calls = 0
        self.shutdown_calls = 0

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        if self.count_error is not None:
            raise self.count_error
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str | bytes:
        return handle.name

    def nvmlDeviceGetUUID(self, handle: FakeGpu | FakeMig) -> str | bytes:
        if handle.uuid is None:
            raise NVMLError_NotSupported("Not Supported")
        return handle.uuid

    def nvmlDeviceGetMigMode(self, handle: FakeGpu) -> tuple[int, int]:
        on = int(handle.migs is not None)
        return on, on

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeGpu) -> int:
        return 7 if handle.migs is not None else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeGpu, index: int) -> FakeMig:
        if handle.migs is None or index >= len(handle.migs):
            raise NVMLError_NotFound("Not Found")
        return handle.migs[index]

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu | FakeMig) -> SimpleNamespace:
        if handle.lost:
            raise NVMLError_GpuIsLost("GPU is lost")
        return SimpleNamespace(
            used=handle.used, total=handle.total, free=handle.total - handle.used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> SimpleNamespace:
        if handle.utilization is None:
            raise NVMLError_NotSupported("Not Supported")
        return SimpleNamespace(gpu=handle.utilization, memory=0)

    def nvmlDeviceGetComputeRunningProcesses(
        self, handle: FakeGpu | FakeMig
    ) -> list[SimpleNamespace]:
        return self._procs(handle, handle.compute)

    def nvmlDeviceGetGraphicsRunningProcesses(
        self, handle: FakeGpu | FakeMig
    ) -> list[SimpleNamespace]:
        return self._procs(handle, handle.graphics)

    @staticmethod
    def _procs(
        handle: FakeGpu | FakeMig, entries: list[tuple[int, int | None]]
    ) -> list[SimpleNamespace]:
        if handle.processes_fail:
            raise NVMLError("Not Supported")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in entries]
