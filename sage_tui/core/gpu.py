"""Live GPU, CPU and RAM figures for the status line and ``doctor``.

:class:`ResourceMonitor` wraps NVML (through ``pynvml`` from the ``nvidia-ml-py``
package) and ``psutil``. The UI polls :meth:`ResourceMonitor.sample` about once a
second from a thread worker, so a sample must be cheap, must never raise for the
ordinary ways a machine lacks GPUs, and must keep reporting the healthy GPUs when
one of them fails.

A machine without GPUs and a machine whose GPUs cannot be read are different things:
the second gets a ``gpu_error``, so the training queue and the engine planner wait or
refuse instead of putting work on the CPU (or on GPUs other users hold) on a guess.

``pynvml`` and ``psutil`` are imported inside methods, never at module level: the
app imports this module while drawing its first frame and must not pay for them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

# GpuSample, GpuProcess and NVML_VALUE_NOT_AVAILABLE are read from here by callers.
from sage_tui.core.gpu_owners import GpuOwners
from sage_tui.core.nvml_read import (
    NVML_VALUE_NOT_AVAILABLE,
    GpuProcess,
    GpuSample,
    is_no_driver,
    nvml_error,
    sample_gpu,
)

if TYPE_CHECKING:
    # typing.Self is 3.11+; only type checkers read this import.
    from typing_extensions import Self

    from sage_tui.core.gpu_scope import GpuScope

__all__ = [
    "NVML_VALUE_NOT_AVAILABLE",
    "GpuProcess",
    "GpuSample",
    "ResourceMonitor",
    "ResourceSnapshot",
    "format_bytes",
]


_KIB = 1024
_MIB = 1024**2
_GIB = 1024**3
_TIB = 1024**4


@dataclass(frozen=True)
class ResourceSnapshot:
    """Everything the status line shows, taken at one moment."""

    gpus: tuple[GpuSample, ...]
    no_gpu_reason: str | None
    """Plain words for why there are no GPU figures; None when there are some."""
    cpu_percent: float
    cpu_count: int
    ram_used: int
    ram_total: int
    taken_at: float
    gpu_error: str | None = None
    """Set when GPUs are, or may be, there but cannot be read: not the same as no GPU."""
    unread_gpus: tuple[int, ...] = ()
    """NVML indices of GPUs that exist but could not be read this time."""
    owners: tuple[GpuOwners, ...] = ()
    """Who holds each GPU (the studio fills it in, `studio.gpu_use`); () until it has."""

    def owners_of(self, index: int) -> GpuOwners | None:
        """Who holds GPU `index`, when that is known."""
        return next((o for o in self.owners if o.index == index), None)


class ResourceMonitor:
    """Samples NVML (and CPU/RAM through psutil) for live resource figures.

    Pass ``nvml`` to use a stand-in for the ``pynvml`` module (tests do); by
    default ``pynvml`` is imported on :meth:`open`. Missing libraries, a missing
    driver and NVML errors become a ``no_gpu_reason`` instead of exceptions, and a
    ``gpu_error`` too when GPUs may be there after all: NVML fails in another way, or
    reports no driver while `scope` (the user's CUDA_VISIBLE_DEVICES) names GPUs or the
    kernel lists NVIDIA GPUs (`driver_gpus`, with device nodes in `dev`).

    The methods are safe to call from different threads: a lock keeps
    :meth:`close` from shutting NVML down while a worker is mid-sample.
    """

    def __init__(
        self,
        nvml: Any | None = None,
        clock: Callable[[], float] = time.time,
        *,
        scope: GpuScope | None = None,
        driver_gpus: Path = Path("/proc/driver/nvidia/gpus"),
        dev: Path = Path("/dev"),
    ) -> None:
        """Create a monitor; nothing is loaded or initialised until :meth:`open`.

        `scope` defaults to the process's start-up scope.
        """
        self._nvml: Any | None = nvml
        self._clock = clock
        self._scope = scope
        self._driver_gpus = driver_gpus
        self._dev = dev
        self._gpu_error: str | None = None
        self._lock = threading.Lock()
        self._opened = False
        self._initialised = False
        self._no_gpu_reason: str | None = None

    def open(self) -> None:
        """Initialise NVML once and prime the CPU counter; never raises for missing GPUs."""
        with self._lock:
            self._open_locked()

    @property
    def no_gpu_reason(self) -> str | None:
        """Why NVML could not be started, or None when it was (or open() has not run)."""
        return self._no_gpu_reason

    def sample(self) -> ResourceSnapshot:
        """Take one snapshot of every GPU plus CPU and RAM, opening the monitor if needed."""
        with self._lock:
            if not self._opened:
                self._open_locked()
            elif not self._initialised and self._gpu_error and self._nvml is not None:
                # GPUs are there but NVML failed to start: it may since have recovered (a
                # driver reload), and the queue waits for it rather than for a restart.
                self._start_nvml()
            gpus, reason, error, unread = self._sample_gpus()
            cpu_percent, cpu_count, ram_used, ram_total = _host_figures()
            return ResourceSnapshot(
                gpus=gpus,
                no_gpu_reason=reason,
                gpu_error=error,
                unread_gpus=unread,
                cpu_percent=cpu_percent,
                cpu_count=cpu_count,
                ram_used=ram_used,
                ram_total=ram_total,
                taken_at=self._clock(),
            )

    def close(self) -> None:
        """Shut NVML down if this monitor initialised it; calling it again does nothing."""
        with self._lock:
            if self._initialised and self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except nvml_error(self._nvml):
                    # A lost GPU or a driver gone away can fail shutdown; there is
                    # nothing left to release and closing must not raise.
                    pass
            self._initialised = False
            self._opened = False

    def __enter__(self) -> Self:
        """Open the monitor for a ``with`` block."""
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the monitor at the end of a ``with`` block."""
        self.close()

    def _open_locked(self) -> None:
        if self._opened:
            return
        self._opened = True
        # The first psutil.cpu_percent(interval=None) call only starts the
        # measurement window and returns 0.0, so spend it here, not on a sample.
        import psutil

        psutil.cpu_percent(interval=None)

        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                self._no_gpu_reason = "nvidia-ml-py is not installed"
                self._gpu_error = self._gpus_may_be_there(self._no_gpu_reason)
                return
            self._nvml = pynvml
        self._start_nvml()

    def _start_nvml(self) -> None:
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml_error(nvml) as err:
            if is_no_driver(nvml, err):
                self._no_gpu_reason = "no NVIDIA driver found"
                self._gpu_error = self._gpus_may_be_there(self._no_gpu_reason)
            else:
                self._no_gpu_reason = f"NVML failed to start: {err}"
                self._gpu_error = self._no_gpu_reason
            return
        self._initialised = True
        self._no_gpu_reason = None
        self._gpu_error = None

    def _gpus_may_be_there(self, reason: str) -> str | None:
        from sage_tui.core.gpu_scope import gpus_expected, startup_scope

        scope = self._scope or startup_scope()
        return gpus_expected(reason, scope, self._driver_gpus, self._dev)

    def _sample_gpus(
        self,
    ) -> tuple[tuple[GpuSample, ...], str | None, str | None, tuple[int, ...]]:
        """(GPUs read, no_gpu_reason, gpu_error, indices that could not be read)."""
        if not self._initialised:
            return (), self._no_gpu_reason, self._gpu_error, ()
        nvml = self._nvml
        error = nvml_error(nvml)
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except error as err:
            reason = f"NVML stopped answering: {err}"
            return (), reason, reason, ()
        if count == 0:
            return (), "NVIDIA driver found but no GPUs", None, ()

        gpus: list[GpuSample] = []
        failures: list[str] = []
        unread: list[int] = []
        for index in range(count):
            try:
                gpus.append(sample_gpu(nvml, index))
            except error as err:
                # One lost or wedged GPU must not hide the others.
                failures.append(f"GPU {index}: {err}")
                unread.append(index)
        if gpus:
            return tuple(gpus), None, None, tuple(unread)
        reason = "NVML could not read any GPU (" + "; ".join(failures) + ")"
        return (), reason, reason, tuple(unread)


def _host_figures() -> tuple[float, int, int, int]:
    import psutil

    cpu_percent = float(psutil.cpu_percent(interval=None))
    cpu_count = psutil.cpu_count() or 1
    memory = psutil.virtual_memory()
    return cpu_percent, int(cpu_count), int(memory.total - memory.available), int(memory.total)


def format_bytes(n: int) -> str:
    """Compact human figure for a byte count: "0 B", "512 KiB", "512 MiB", "12.3 GiB".

    Whole numbers up to MiB, one decimal from GiB up; a value that would round to
    1024 of one unit is shown in the next one ("1.0 GiB", not "1024 MiB").
    """
    if n < 0:
        return "-" + format_bytes(-n)
    if n < _KIB:
        return f"{n} B"
    if round(n / _KIB) < 1024:
        return f"{round(n / _KIB)} KiB"
    if round(n / _MIB) < 1024:
        return f"{round(n / _MIB)} MiB"
    if round(n / _GIB, 1) < 1024:
        return f"{n / _GIB:.1f} GiB"
    return f"{n / _TIB:.1f} TiB"
