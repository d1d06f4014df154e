"""The machine as the engine planner sees it: each GPU's memory, the RAM available, the cores.

:func:`hardware_from_snapshot` converts a resource monitor snapshot, so the planner itself needs
neither NVML nor psutil.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sage_tui.core.gpu import ResourceSnapshot

__all__ = ["GIB", "GpuMemory", "Hardware", "hardware_from_snapshot"]

GIB = 1024**3


@dataclass(frozen=True)
class GpuMemory:
    """Memory of one GPU at one moment."""

    total: int
    """Bytes."""
    free: int
    """Bytes; another process (e.g. training) may hold the rest."""
    index: int | None = None
    """The device's NVML index; None means its position in :attr:`Hardware.gpus`."""


@dataclass(frozen=True)
class Hardware:
    """The machine as the planner sees it."""

    gpus: tuple[GpuMemory, ...]
    """Empty on a CPU-only machine."""
    ram_available: int
    """Bytes of RAM free for use (psutil's "available"); holds the CPU KV cache."""
    cpu_count: int


def hardware_from_snapshot(snapshot: ResourceSnapshot) -> Hardware:
    """The planner's view of a resource monitor snapshot."""
    return Hardware(
        gpus=tuple(
            GpuMemory(total=gpu.memory_total, free=gpu.memory_free, index=gpu.index)
            for gpu in snapshot.gpus
        ),
        ram_available=max(0, snapshot.ram_total - snapshot.ram_used),
        cpu_count=snapshot.cpu_count,
    )
