"""Layering: the core and the first frame do not pay for Textual, torch or vLLM."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import sage_tui
import sage_tui.core

REPO = Path(__file__).resolve().parent.parent
HEAVY = (
    "torch",
    "vllm",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "pyarrow",
    "huggingface_hub",
    "pynvml",
    "psutil",
)


def modules_after_import(*names: str) -> set[str]:
    code = (
        f"import sys, json\nfor n in {list(names)!r}: __import__(n)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


def test_core_imports_no_ui_and_nothing_heavy() -> None:
    core = [m.name for m in pkgutil.walk_packages(sage_tui.core.__path__, "sage_tui.core.")]
    assert "sage_tui.core.store" in core and "sage_tui.core.models.registry" in core
    loaded = modules_after_import(*core)
    assert loaded.isdisjoint({"textual", "rich", *HEAVY}), loaded & {"textual", "rich", *HEAVY}


def test_import_contracts_hold() -> None:
    """pyproject's [tool.importlinter] contracts (the layers, who may import the UI) are kept."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    if not lint_imports.exists():
        pytest.skip(f"{lint_imports} is missing: install the dev extra (import-linter)")
    out = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_cli_and_app_modules_import_nothing_heavy() -> None:
    loaded = modules_after_import("sage_tui.cli", "sage_tui.ui.app")
    assert "textual" in loaded
    assert loaded.isdisjoint(HEAVY), loaded & set(HEAVY)


def test_every_package_ships_in_the_wheel() -> None:
    """pyproject lists packages by hand (styles/ and sample_data/ are mapped in); keep it whole."""
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    mapped = {"sage_tui.styles", "sage_tui.sample_data"}
    found = (
        {"sage_tui"}
        | mapped
        | {m.name for m in pkgutil.walk_packages(sage_tui.__path__, "sage_tui.") if m.ispkg}
    )
    assert listed == found
