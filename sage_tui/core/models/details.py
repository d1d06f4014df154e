"""What a model folder holds, read without loading it: size on disk, parameters, dtype,
context length; for a LoRA adapter its rank, alpha and target modules.

Parameters are counted from the safetensors headers (the first bytes of each file: a length
and a JSON table of tensor shapes), so a 14 GiB model is described in milliseconds.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADER_LIMIT = 100 * 1024 * 1024
"""A safetensors header longer than this is not read (a damaged or foreign file)."""


@dataclass(frozen=True)
class FolderFacts:
    """What the files of a model or adapter folder say about it (None: not found there)."""

    size_bytes: int
    parameters: int | None
    dtype: str | None
    context_length: int | None = None
    architecture: str | None = None
    rank: int | None = None
    alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    problem: str | None = None
    """Why the folder could not be read (gone, not a folder), in plain words."""


def folder_size(path: Path) -> int:
    """Bytes of the regular files under `path` (links not followed)."""
    total = 0
    for file in path.rglob("*"):
        try:
            if file.is_file() and not file.is_symlink():
                total += file.stat().st_size
        except OSError:
            continue
    return total


def safetensors_parameters(path: Path) -> tuple[int, str | None] | None:
    """(parameters, dtype) from the safetensors files in `path`; None when it has none or
    one cannot be read."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    count, dtypes = 0, set()
    for file in files:
        try:
            with file.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > HEADER_LIMIT:
                    return None
                header = json.loads(handle.read(length))
        except (OSError, struct.error, ValueError):
            return None
        for name, tensor in header.items():
            if name == "__metadata__" or not isinstance(tensor, dict):
                continue
            count += math.prod(tensor.get("shape", []))
            dtypes.add(str(tensor.get("dtype", "")).lower())
    dtype = dtypes.pop() if len(dtypes) == 1 else ("mixed" if dtypes else None)
    return count, dtype


def _json(file: Path) -> dict[str, Any]:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_folder_facts(path: Path) -> FolderFacts:
    """The facts of the model or adapter in `path` (blocking: reads headers, walks files)."""
    if not path.is_dir():
        gone = "is gone" if not path.exists() else "is not a folder"
        return FolderFacts(0, None, None, problem=f"{path} {gone}")
    counted = safetensors_parameters(path)
    parameters, tensor_dtype = counted if counted else (None, None)
    adapter = _json(path / "adapter_config.json")
    if adapter:
        targets = adapter.get("target_modules") or []
        targets = [targets] if isinstance(targets, str) else targets
        return FolderFacts(
            size_bytes=folder_size(path),
            parameters=parameters,
            dtype=tensor_dtype,
            rank=adapter.get("r"),
            alpha=adapter.get("lora_alpha"),
            target_modules=tuple(sorted(map(str, targets))) if isinstance(targets, list) else (),
        )
    config = _json(path / "config.json")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    context = config.get("max_position_embeddings") or text.get("max_position_embeddings")
    architectures = config.get("architectures") or [config.get("model_type")]
    return FolderFacts(
        size_bytes=folder_size(path),
        parameters=parameters,
        dtype=str(config.get("torch_dtype") or config.get("dtype") or tensor_dtype or "") or None,
        context_length=context if isinstance(context, int) else None,
        architecture=str(architectures[0]) if architectures and architectures[0] else None,
    )


def format_parameters(count: int | None) -> str:
    """135M, 7.6B."""
    if count is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            value = count / size
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(count)
