"""Checks on model folders: is this a usable model, and was it written completely.

A provisioned folder is finished only when its manifest (`sage-model.json`, written last)
lists every file with its size and the files on disk match. A folder without one, or with a
file missing or cut short, is half-written: it is removed and provisioned again, never loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sage_tui.core.atomic import write_atomic
from sage_tui.errors import ModelError

MANIFEST = "sage-model.json"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def read_json_object(file: Path, missing: str) -> dict[str, Any]:
    """A JSON object from `file`; ModelError with `missing` if the file is absent, or naming
    the file and the parse error."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ModelError(f"{file} is not a JSON object")
    return value


def check_model_folder(path: Path) -> dict[str, Any]:
    """Raise ModelError naming what is missing unless `path` holds a Hugging Face model.

    Returns the parsed `config.json`.
    """
    if not path.exists():
        raise ModelError(f"{path} does not exist")
    if not path.is_dir():
        raise ModelError(f"{path} is not a model folder: it is a file, expected a folder")
    if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        raise ModelError(
            f"{path} is a LoRA adapter, not a base model: register its base model instead"
        )
    config_file = path / "config.json"
    config = read_json_object(config_file, f"{path} is not a model folder: no config.json")
    if not (config.get("model_type") or config.get("architectures")):
        raise ModelError(f"{config_file} names no model_type or architectures")
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ModelError(f"{path} is not a model folder: no weights (*.safetensors or *.bin)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(f"{path} is not a model folder: no tokenizer files")
    return config


def write_manifest(path: Path, info: dict[str, Any]) -> None:
    """Record every file in `path` with its size; call after everything else is written."""
    files = {
        str(f.relative_to(path)): f.stat().st_size
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }
    write_atomic(path / MANIFEST, json.dumps({**info, "files": files}, indent=2, sort_keys=True))


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of a finished folder, or None if the folder is absent or half-written."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        for name, size in files.items():
            if (path / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest
