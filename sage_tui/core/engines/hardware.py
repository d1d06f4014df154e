"""The machine as the engine planner sees it: each GPU's memory, the RAM available, the cores.

:func:`hardware_from_snapshot` converts a resource monitor snapshot, so the planner itself needs
neither NVML nor psutil. It offers only the GPUs the user's CUDA_VISIBLE_DEVICES shows, and
refuses (rather than planning for the CPU) when the GPUs cannot be read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sage_tui.core.gpu_scope import GpusUnreadable

if TYPE_CHECKING:
    from sage_tui.core.gpu import ResourceSnapshot
    from sage_tui.core.gpu_scope import GpuScope

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
    cuda_name: str = ""
    """What a child's CUDA_VISIBLE_DEVICES must say for this GPU (the user's UUID or MIG id
    untouched, else the NVML index); "" means the index."""


@dataclass(frozen=True)
class Hardware:
    """The machine as the planner sees it."""

    gpus: tuple[GpuMemory, ...]
    """Empty on a CPU-only machine."""
    ram_available: int
    """Bytes of RAM free for use (psutil's "available"); holds the CPU KV cache."""
    cpu_count: int

    def child_value(self, indices: Iterable[int]) -> str | None:
        """CUDA_VISIBLE_DEVICES for an engine child on `indices` (NVML numbers); None for
        none, so a CPU engine's child keeps the studio's environment."""
        by_index = {gpu.index: gpu.cuda_name for gpu in self.gpus}
        names = [by_index.get(index) or str(index) for index in indices]
        return ",".join(names) if names else None


def hardware_from_snapshot(snapshot: ResourceSnapshot, scope: GpuScope | None = None) -> Hardware:
    """The planner's view of a resource monitor snapshot, inside `scope` (default: the
    process's start-up scope).

    GpusUnreadable (a SageError) when GPUs may be there but cannot be read: an engine planned
    for the CPU there would be a guess, and one planned onto unknown GPUs could take another
    user's.
    """
    if scope is None:
        from sage_tui.core.gpu_scope import startup_scope

        scope = startup_scope()
    try:
        visible = scope.usable(snapshot)
    except GpusUnreadable as err:
        raise GpusUnreadable(err.reason, "the engine is not started on a guess") from None
    gpus = []
    for gpu in visible:
        name = scope.child_value([gpu.index])
        gpus.append(
            GpuMemory(
                total=gpu.memory_total,
                free=gpu.memory_free,
                index=gpu.index,
                cuda_name="" if name == str(gpu.index) else name,
            )
        )
    return Hardware(
        gpus=tuple(gpus),
        ram_available=max(0, snapshot.ram_total - snapshot.ram_used),
        cpu_count=snapshot.cpu_count,
    )
