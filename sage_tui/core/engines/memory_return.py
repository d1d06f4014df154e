"""Waiting for a stopped engine's GPU memory to show up as free again.

Drivers can keep memory for a moment after an engine's process ended; planning the next engine
before it is back would place it on the wrong GPUs, or refuse it for want of room.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from sage_tui.core.engines.hardware import Hardware


async def wait_for_memory_return(
    hardware: Callable[[], Hardware],
    indices: Sequence[int],
    before: Hardware,
    *,
    seconds: float,
    tolerance: int,
    on_status: Callable[[str], None],
) -> None:
    """Poll `hardware` until the GPUs in `indices` no longer hold what they held `before`.

    A GPU counts as returned when at most `tolerance` bytes of what it held are still in use.
    After `seconds` it gives up and tells `on_status` which GPUs kept their memory.
    """
    held = {g.index: g.total - g.free for g in before.gpus if g.index in indices}
    deadline = time.monotonic() + seconds
    while True:
        now = await asyncio.to_thread(hardware)
        still = {
            g.index: g.total - g.free
            for g in now.gpus
            if g.index in held and held[g.index] - (g.total - g.free) < tolerance
        }
        if not still:
            return
        if time.monotonic() > deadline:
            on_status(
                "GPU memory did not come back after stopping the engine on GPU "
                + ", ".join(map(str, sorted(still)))
            )
            return
        await asyncio.sleep(0.5)
