"""Export a model folder for other tools: a copy that vLLM and transformers load as it is, with
a README card saying what the model is.

The copy goes to `<dest>.partial` first and is renamed when complete, so a copy cut short (a
full disk, a kill) never looks like an export; it is removed on failure. A destination that
exists and is not empty is refused, and so is one whose disk has less room than the model.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path

from sage_tui.core.gpu import format_bytes
from sage_tui.core.models.folder import MANIFEST
from sage_tui.errors import ModelError

ADAPTER_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
"""What an adapter's export holds: a job's folder also keeps its events, logs and checkpoints."""
ROOM = 1.02
"""Free space wanted on the destination, as a multiple of the bytes to copy."""


def files_to_export(source: Path, adapter: bool) -> list[Path]:
    """The files an export of `source` copies (relative paths)."""
    if adapter:
        return [Path(name) for name in ADAPTER_FILES if (source / name).is_file()]
    return sorted(
        file.relative_to(source)
        for file in source.rglob("*")
        if file.is_file() and file.name != MANIFEST and ".cache" not in file.parts
    )


def check_destination(dest: Path, needed: int) -> None:
    """ModelError unless `dest` is absent or an empty folder on a disk with room for `needed`."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        what = "a file" if not dest.is_dir() else "a folder that is not empty"
        raise ModelError(f"{dest} is {what}: export into a new or empty folder")
    parent = dest if dest.exists() else dest.parent
    if not parent.is_dir():
        raise ModelError(f"{parent} does not exist: create it first or choose another folder")
    free = shutil.disk_usage(parent).free
    if free < needed * ROOM:
        raise ModelError(
            f"not enough room on the disk of {parent}: the export needs {format_bytes(needed)},"
            f" {format_bytes(free)} is free"
        )


def export_folder(
    source: Path,
    dest: Path,
    card: str,
    *,
    adapter: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> Path:
    """Copy the model (or adapter) in `source` to `dest` with `card` as its README.md.
    Blocking; ModelError naming the problem, and nothing left at `dest` when it fails."""
    if not source.is_dir():
        raise ModelError(f"{source} is gone: the model's files are not there to export")
    files = files_to_export(source, adapter)
    if not files:
        raise ModelError(f"{source} holds no model files to export")
    needed = sum((source / f).stat().st_size for f in files)
    dest = dest.expanduser().absolute()
    check_destination(dest, needed)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    copied = 0
    try:
        for relative in files:
            target = partial / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, target)  # follows links (HF cache blobs)
            copied += target.stat().st_size
            progress(f"copied {relative} ({format_bytes(copied)} of {format_bytes(needed)})")
        (partial / "README.md").write_text(card, encoding="utf-8")
        if dest.exists():
            dest.rmdir()  # empty, checked above
        partial.rename(dest)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise ModelError(
                f"the disk of {dest.parent} filled up after {format_bytes(copied)} of"
                f" {format_bytes(needed)}: the partial copy was removed, nothing was exported"
            ) from None
        raise ModelError(
            f"export to {dest} failed: {err.strerror or err}; nothing was exported"
        ) from None
    return dest
