"""The last few minutes of each GPU's utilisation and memory, for the GPU panel's sparklines.

The App adds every resource sample (about 1 Hz) as it arrives, so opening the panel shows the
past, not an empty chart. Bounded: `HISTORY_SAMPLES` per GPU.
"""

from __future__ import annotations

from collections import deque

from sage_tui.core.gpu import ResourceSnapshot

HISTORY_SAMPLES = 300
"""Samples kept per GPU: five minutes at the default 1 s poll."""


class GpuHistory:
    """Utilisation (percent) and memory used (bytes) per GPU index, oldest first."""

    def __init__(self, limit: int = HISTORY_SAMPLES) -> None:
        self.limit = limit
        self._utilization: dict[int, deque[float]] = {}
        self._memory: dict[int, deque[float]] = {}
        self._last_taken_at: float | None = None

    def add(self, snapshot: ResourceSnapshot) -> None:
        """Record one sample; the same sample twice (equal `taken_at`) counts once."""
        if snapshot.taken_at == self._last_taken_at:
            return
        self._last_taken_at = snapshot.taken_at
        for gpu in snapshot.gpus:
            util = self._utilization.setdefault(gpu.index, deque(maxlen=self.limit))
            memory = self._memory.setdefault(gpu.index, deque(maxlen=self.limit))
            # A device without a utilisation figure (a MIG GPU) charts 0, said so on the panel.
            util.append(float(gpu.utilization or 0))
            memory.append(float(gpu.memory_used))

    def utilization(self, index: int) -> list[float]:
        """GPU `index`'s utilisation samples, oldest first."""
        return list(self._utilization.get(index, ()))

    def memory(self, index: int) -> list[float]:
        """GPU `index`'s memory-used samples in bytes, oldest first."""
        return list(self._memory.get(index, ()))
