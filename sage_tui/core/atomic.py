"""Writing files so that readers (and a crash) see the old content or the new, never half.

Every file the studio writes for others to read (spec.json, active_model.json, datasets it
builds) goes through :func:`write_atomic`: the text is written next to the target, flushed to
disk, then renamed over it. The file is 0600 (a temporary file's mode, kept by the rename) and
any folder made for it 0700, whatever the umask: they live in the user's private home.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from sage_tui.core.private_files import private_dirs


def write_atomic(path: str | os.PathLike[str], text: str | Iterable[str]) -> Path:
    """Write `text` (a string or an iterable of pieces) to `path` atomically; returns the path."""

    def write(handle: TextIO) -> None:
        if isinstance(text, str):
            handle.write(text)
        else:
            handle.writelines(text)

    return write_atomic_with(path, write)


def write_atomic_with(path: str | os.PathLike[str], write: Callable[[TextIO], None]) -> Path:
    """Call `write(handle)` on a temporary file beside `path`, then rename it over `path`."""
    target = Path(path)
    private_dirs(target.parent)
    # mkstemp creates the file 0600; os.replace keeps that mode.
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target
