"""Settings: each has a default, an environment variable and a command-line flag.

Precedence is flag > environment > default. The settings are plain data; `cli.py` builds them
once and hands them to the services and the App.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sage_tui.errors import SageError
from sage_tui.paths import Paths, resolve_home

ENGINES = ("auto", "vllm", "transformers")


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


@dataclass(frozen=True)
class Settings:
    """Everything a user can set without editing code."""

    home: Path = field(default_factory=resolve_home, metadata={"env": "SAGE_HOME"})
    """Folder holding the database, models and fine-tuning outputs (default ~/.sage)."""

    engine: str = field(default="auto", metadata={"env": "SAGE_ENGINE"})
    """Inference engine: `vllm`, `transformers`, or `auto` (vLLM when installed)."""

    default_model: str = field(
        default="smollm2-135m-instruct", metadata={"env": "SAGE_DEFAULT_MODEL"}
    )
    """Built-in model provisioned on first launch and used until another is chosen."""

    resource_poll_seconds: float = field(default=1.0, metadata={"env": "SAGE_POLL_SECONDS"})
    """How often the status line refreshes GPU / CPU figures."""

    jobs_per_gpu: int = field(default=1, metadata={"env": "SAGE_JOBS_PER_GPU"})
    """Fine-tuning jobs each GPU runs at a time (on a host without GPUs: jobs at a time);
    more wait in the queue."""

    @property
    def paths(self) -> Paths:
        """On-disk locations under `home`."""
        return Paths(self.home)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Defaults, then environment variables, then `overrides` whose value is not None."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = _env(f.metadata["env"])
            if raw is not None:
                values[f.name] = _convert(f.name, raw, f.metadata["env"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "home" in values:
            values["home"] = resolve_home(values["home"])
        settings = cls(**values)
        if settings.engine not in ENGINES:
            raise SageError(
                f"unknown engine {settings.engine!r}; choose one of {', '.join(ENGINES)}"
            )
        return settings

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        return replace(self, **changes)


def _convert(name: str, raw: str, env: str) -> Any:
    if name == "resource_poll_seconds":
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if value <= 0:
            raise SageError(f"{env}={raw!r} is not a positive number of seconds")
        return value
    if name == "jobs_per_gpu":
        if not raw.strip().isdigit() or int(raw) < 1:
            raise SageError(f"{env}={raw!r} is not a whole number of at least 1")
        return int(raw)
    return raw
