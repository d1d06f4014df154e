"""Keeping the inference engine's output off the user's screen and out of command results.

vLLM's EngineCore child, its workers, tqdm bars and native libraries write straight to file
descriptors 1 and 2. Under the TUI that would scribble over the screen; under `sage-tui ask` it
would mix with the answer a script reads. `engine_output_to` points both descriptors at a log
file and hands back files that still reach the real stdout and stderr. The log is rotated
when it is opened (`core.log_files`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from sage_tui.core.log_files import rotate
from sage_tui.core.private_files import private_dirs, private_open


@contextmanager
def engine_output_to(log_path: Path) -> Iterator[tuple[TextIO, TextIO]]:
    """Send fds 1 and 2 (this process's and its children's) to `log_path`.

    An oversized `log_path` is rotated first (see `core.log_files.rotate`). Yields (stdout,
    stderr) files on the original descriptors. Meanwhile `sys.__stderr__` and
    `sys.stderr` point at the yielded stderr (Textual draws on `sys.__stderr__`) and
    `sys.__stdout__` at the yielded stdout (the terminal size is read from it). Everything is
    restored on exit.
    """
    private_dirs(log_path.parent)
    rotate(log_path)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out = os.fdopen(os.dup(saved[0]), "w", encoding="utf-8", errors="replace")
    err = os.fdopen(os.dup(saved[1]), "w", encoding="utf-8", errors="replace")
    previous = sys.__stdout__, sys.__stderr__, sys.stderr
    with open(log_path, "a", encoding="utf-8", opener=private_open) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.__stdout__ = out
        sys.__stderr__ = sys.stderr = err
        try:
            yield out, err
        finally:
            for stream in (out, err):
                stream.flush()
            sys.__stdout__, sys.__stderr__, sys.stderr = previous
            for fd, original in zip((1, 2), saved, strict=True):
                os.dup2(original, fd)
                os.close(original)
            out.close()
            err.close()
