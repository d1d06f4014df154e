"""Reading one GPU through NVML: its memory, utilisation, processes, UUID and MIG instances
(each with its memory and its processes).

:class:`~sage_tui.core.gpu.ResourceMonitor` calls :func:`sample_gpu` for every GPU on each
sample; NVML errors from the core figures propagate so the monitor can report that GPU as
unread and keep the others. ``nvml`` is the ``pynvml`` module or a stand-in (tests use one);
``psutil`` is imported inside the function that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NVML_VALUE_NOT_AVAILABLE = 2**64 - 1
"""NVML's "not available" marker for unsigned long long fields (``(unsigned long long)-1``)."""


@dataclass(frozen=True)
class GpuProcess:
    """One process holding memory on a GPU."""

    pid: int
    used_bytes: int | None
    """GPU memory the process holds; None when NVML does not report it."""
    name: str
    """Process name from psutil; "" when unknown or the process is gone."""
    mig: str = ""
    """UUID of the MIG instance the process runs on; "" for the whole GPU."""


@dataclass(frozen=True)
class MigDevice:
    """One MIG instance of a GPU with MIG mode on: its own memory, its own processes."""

    uuid: str
    memory_used: int | None
    """None when NVML cannot read the instance's memory."""
    memory_total: int | None


@dataclass(frozen=True)
class GpuSample:
    """Figures for one GPU at one moment."""

    index: int
    name: str
    memory_used: int
    memory_total: int
    memory_free: int
    utilization: int | None
    """GPU utilisation in percent; None when the device does not support it."""
    processes: tuple[GpuProcess, ...]
    """Largest memory holder first; processes with unknown memory last."""
    uuid: str = ""
    """NVML's UUID ("GPU-8f0b..."), matched against CUDA_VISIBLE_DEVICES; "" when unknown."""
    mig_uuids: tuple[str, ...] = ()
    """UUIDs of the MIG instances on this GPU ("MIG-..."); empty when MIG is off."""
    mig_devices: tuple[MigDevice, ...] = ()
    """The MIG instances with their memory (the same order as `mig_uuids`)."""


def nvml_error(nvml: Any) -> type[BaseException]:
    """The library's base error class; a stand-in without one gets plain Exception."""
    return getattr(nvml, "NVMLError", Exception)


def is_no_driver(nvml: Any, err: BaseException) -> bool:
    """Whether `err` from nvmlInit() means no NVIDIA library or driver, rather than a failure."""
    # DriverNotLoaded is the same situation for the user as a missing library:
    # libnvidia-ml is present (e.g. in a container image) but no kernel driver is.
    for name in ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded"):
        cls = getattr(nvml, name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return True
    return False


def _text(value: Any) -> str:
    # Older nvidia-ml-py releases return strings as bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _uuid(nvml: Any, handle: Any) -> str:
    try:
        return _text(nvml.nvmlDeviceGetUUID(handle))
    except (nvml_error(nvml), AttributeError):
        return ""  # the GPU's figures still stand; only UUID entries cannot name it


def _mig_handles(nvml: Any, handle: Any) -> list[tuple[str, Any]]:
    """(UUID, handle) of each MIG instance on a GPU with MIG mode on; [] on any error."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        if not current:
            return []
        slots = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
    except (nvml_error(nvml), AttributeError, TypeError, ValueError):
        return []  # not a MIG-capable GPU, or an old library
    found: list[tuple[str, Any]] = []
    for slot in range(slots):
        try:
            instance = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except nvml_error(nvml):
            continue  # an empty slot
        uuid = _uuid(nvml, instance)
        if uuid:
            found.append((uuid, instance))
    return found


def _mig_device(nvml: Any, uuid: str, instance: Any) -> MigDevice:
    try:
        memory = nvml.nvmlDeviceGetMemoryInfo(instance)
        return MigDevice(uuid, int(memory.used), int(memory.total))
    except (nvml_error(nvml), AttributeError, TypeError, ValueError):
        return MigDevice(uuid, None, None)  # shown as unknown, not as an empty instance


def sample_gpu(nvml: Any, index: int) -> GpuSample:
    """Read one GPU; NVML errors from the core figures propagate to the caller."""
    error = nvml_error(nvml)
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(nvml.nvmlDeviceGetName(handle))
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)

    utilization: int | None
    try:
        utilization = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except error:
        # Not supported on some devices (e.g. MIG instances, some vGPUs).
        utilization = None

    migs = _mig_handles(nvml, handle)
    # In MIG mode the GPU's own process lists are the aggregate only for a privileged caller;
    # each instance's handle answers for its own processes, so those are read first.
    used_by_pid: dict[int, int | None] = {}
    mig_of: dict[int, str] = {}
    for uuid, instance in migs:
        for pid in _read_processes(nvml, instance, used_by_pid):
            mig_of.setdefault(pid, uuid)
    _read_processes(nvml, handle, used_by_pid)
    processes = [
        GpuProcess(pid=pid, used_bytes=used, name=_process_name(pid), mig=mig_of.get(pid, ""))
        for pid, used in used_by_pid.items()
    ]
    processes.sort(key=lambda p: (p.used_bytes is None, -(p.used_bytes or 0), p.pid))
    return GpuSample(
        index=index,
        name=str(name),
        memory_used=int(memory.used),
        memory_total=int(memory.total),
        memory_free=int(memory.free),
        utilization=utilization,
        processes=tuple(processes),
        uuid=_uuid(nvml, handle),
        mig_uuids=tuple(uuid for uuid, _ in migs),
        mig_devices=tuple(_mig_device(nvml, uuid, instance) for uuid, instance in migs),
    )


def _read_processes(nvml: Any, handle: Any, used_by_pid: dict[int, int | None]) -> list[int]:
    """Add the compute and graphics processes of `handle` (a GPU or a MIG instance) to
    `used_by_pid`; returns the pids it listed."""
    error = nvml_error(nvml)
    listed: list[int] = []
    getters = ["nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"]
    for getter_name in getters:
        getter = getattr(nvml, getter_name, None)
        if getter is None:
            continue
        try:
            infos = getter(handle)
        except error:
            # Process lists are extra detail; the memory figures still stand.
            continue
        for info in infos:
            pid = int(info.pid)
            listed.append(pid)
            used = _known_bytes(getattr(info, "usedGpuMemory", None))
            if pid not in used_by_pid:
                used_by_pid[pid] = used
            elif used is not None:
                # A process with both a compute and a graphics context is listed
                # twice with its whole footprint each time: adding would double it.
                previous = used_by_pid[pid]
                used_by_pid[pid] = used if previous is None else max(previous, used)
    return listed


def _known_bytes(value: Any) -> int | None:
    if value is None:
        return None
    value = int(value)
    if value == NVML_VALUE_NOT_AVAILABLE:
        return None
    return value


def _process_name(pid: int) -> str:
    import psutil

    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        # Gone between the NVML call and now, not ours to inspect, or a PID from
        # another PID namespace (NVML reports host PIDs inside containers).
        return ""
