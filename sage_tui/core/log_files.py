"""Rotating the studio's own log files (`engine.log`, `queue.log`).

A studio left running for weeks on a shared box must not fill the disk, so each log is rotated
when it is opened: `log` -> `log.1` -> `log.2` ..., keeping `KEEP` old files. Rotation happens
only at open time because a running process keeps writing to the descriptor it already holds;
renaming the file under it loses nothing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

MAX_BYTES = 10 * 1024 * 1024
"""A log larger than this is rotated the next time it is opened."""
KEEP = 3
"""Old files kept beside a rotated log (`.1` the newest)."""


def rotate(path: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> bool:
    """Rotate `path` if it is over `max_bytes`, keeping `keep` old files; True if rotated.

    A missing file is left alone. With `keep` 0 an oversized log is simply removed.
    """
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    if keep < 1:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True
    # os.replace overwrites, so the oldest (`.keep`) is dropped by the first move.
    for index in range(keep - 1, 0, -1):
        older = _numbered(path, index)
        with contextlib.suppress(FileNotFoundError):
            os.replace(older, _numbered(path, index + 1))
    # Two studios may rotate at once; the loser finds the file already moved.
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, _numbered(path, 1))
    return True


def _numbered(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")
