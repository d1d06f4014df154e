"""Checkpoints that survive a killed runner and a full disk.

The trainer writes `checkpoints/checkpoint-N/` in place: weights, optimizer, scheduler, RNG
state, then `trainer_state.json` last. A runner killed (or out of disk) part-way leaves a folder
that looks like a checkpoint; `JobFolder.last_checkpoint` counts one only once its
`trainer_state.json` reads back whole, and the runner removes the others (`remove_partial`)
before it trains and after a failure, so a resume starts from the newest complete one and a
later save of the same step starts clean. A save that failed for want of room is told apart
(`save_failure`) so the job says which save it was and what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from sage_tui.core.training.job_folder import JobFolder, checkpoint_complete

NO_ROOM = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit reached",
}
"""The errors a save fails with when the disk (or the user's share of it) has no more room."""

NO_ROOM_WORDS = {
    "no space left on device": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "file too large": errno.EFBIG,
    "filetoolarge": errno.EFBIG,  # safetensors (Rust) names the io::ErrorKind
    "storagefull": errno.ENOSPC,
}
"""How the same errors read when a library re-raises them as text (torch's zip writer,
safetensors' SafetensorError)."""


def partial_checkpoints(folder: JobFolder) -> list[Path]:
    """`checkpoint-N` folders that were cut short (killed or failed while saving), oldest first."""
    found = []
    for path in folder.checkpoints.glob("checkpoint-*"):
        suffix = path.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and path.is_dir() and not checkpoint_complete(path):
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def remove_partial(folder: JobFolder) -> list[str]:
    """Delete the checkpoints that were cut short; returns their names (for the log)."""
    removed = []
    for path in partial_checkpoints(folder):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def no_room(err: BaseException, folder: Path) -> int | None:
    """The errno (ENOSPC, EDQUOT, EFBIG) if `err` came from a disk with no room left under
    `folder`; None otherwise.

    safetensors and the OS say so in the error. torch's checkpoint writer does not ("unexpected
    pos 704 vs 598"): for its errors the file size limit and the free space are looked at.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if code in NO_ROOM:
            return code
        text = str(current).lower()
        for words, found in NO_ROOM_WORDS.items():
            if words in text:
                return found
        if any(words in text for words in TORCH_WRITER_WORDS):
            return _room_left(folder)
        current = current.__cause__ or current.__context__
    return None


TORCH_WRITER_WORDS = ("inline_container", "pytorchstreamwriter", "file write failed")
"""What torch.save's errors say when a write failed, whatever the reason."""

LOW_SPACE = 64 * 1024**2
"""Free bytes below which a failed write is put down to a full disk."""


def _room_left(folder: Path) -> int | None:
    """Why a write under `folder` could have failed: EFBIG under a file size limit (ulimit -f),
    ENOSPC on a disk with almost no space left, else None."""
    import resource

    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return errno.EFBIG
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return errno.ENOSPC if stats.f_bavail * stats.f_frsize < LOW_SPACE else None


def save_failure(
    err: BaseException, folder: JobFolder, saving: str | None
) -> tuple[str, str] | None:
    """(reason, suggestion) for a job whose save of `saving` (a checkpoint's name or "the
    adapter") ran out of room; None when `err` is something else or no save was under way."""
    code = no_room(err, folder.path)
    if code is None or saving is None:
        return None
    first = f"{type(err).__name__}: {err}".strip().splitlines()[0]
    last = folder.last_checkpoint()
    start = f"{last.name}, the last complete checkpoint" if last else "the beginning"
    if code == errno.EFBIG:
        todo = "raise the file size limit (ulimit -f)"
    else:
        todo = f"free disk space under {folder.path.parent}"
    return f"{NO_ROOM[code]} while saving {saving}: {first}", f"{todo}, then resume ({start})"


SAVING_ADAPTER = "while saving the adapter"
"""The note the runner adds to an error raised while it saved the final adapter."""


def being_saved(err: BaseException, folder: JobFolder) -> str | None:
    """What the runner was saving when `err` stopped it: "the adapter", the name of the newest
    checkpoint cut short (when it is newer than the last complete one), or None."""
    if SAVING_ADAPTER in getattr(err, "__notes__", ()):
        return "the adapter"
    partial = partial_checkpoints(folder)
    last = folder.last_checkpoint()
    if partial and (last is None or _step(partial[-1]) > _step(last)):
        return partial[-1].name
    return None


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])
