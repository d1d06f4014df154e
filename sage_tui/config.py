"""Settings: each has a default, an environment variable and sometimes a command-line flag.

Precedence is flag > environment > default. The settings are plain data; `cli.py` builds them
once and hands them to the services and the App. Every value from the environment or a flag
passes one table of rules (`RULES`), so a typo fails at start-up in one line that names the
variable, rather than later as a busy loop (`SAGE_POLL_SECONDS=nan`) or a traceback.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sage_tui.core.models.builtin import BUILTIN_MODELS
from sage_tui.errors import SageError
from sage_tui.paths import Paths, resolve_home

ENGINES = ("auto", "vllm", "transformers")
POLL_SECONDS = (0.05, 3600.0)
"""Accepted status-line refresh interval: faster is a busy loop, slower looks frozen."""
JOBS_PER_GPU = (1, 64)
"""Accepted jobs at a time per GPU (or per machine without GPUs)."""


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


@dataclass(frozen=True)
class Settings:
    """Everything a user can set without editing code."""

    home: Path = field(
        default_factory=resolve_home, metadata={"env": "SAGE_HOME", "flag": "--home"}
    )
    """Folder holding the database, models and fine-tuning outputs (default ~/.sage)."""

    engine: str = field(default="auto", metadata={"env": "SAGE_ENGINE", "flag": "--engine"})
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
        """Defaults, then environment variables, then `overrides` whose value is not None.

        An empty variable counts as unset. Raises SageError naming the first variable or flag
        whose value breaks its rule in `RULES`.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = _env(f.metadata["env"])
            if raw is not None:
                values[f.name] = RULES[f.name].apply(f.metadata["env"], raw)
        flags = {f.name: f.metadata.get("flag", f.name) for f in fields(cls)}
        for name, value in overrides.items():
            if value is None:
                continue
            if name not in RULES:  # not a setting: cls() below names it in a TypeError
                values[name] = value
                continue
            values[name] = RULES[name].apply(flags[name], str(value))
        return cls(**values)

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Rule:
    """How the text of one setting becomes its value."""

    parse: Callable[[str], Any]
    """The value of the text; raises ValueError when the text breaks the rule."""

    expected: str
    """What the error message says is expected, after "is not"."""

    def apply(self, source: str, raw: str) -> Any:
        """The value of `raw`, or a one-line SageError naming `source` (a variable or a flag)."""
        try:
            return self.parse(raw)
        except (ValueError, RuntimeError) as err:  # RuntimeError: `~nobody` names no user
            shown = raw if len(raw) <= 40 else raw[:37] + "..."
            raise SageError(f"{source}={shown!r} is not {self.expected}") from err


def _seconds(text: str) -> float:
    text = text.strip()
    # float() also takes '\u0661' (Arabic-Indic one), '1_0', 'nan' and 'inf'.
    if not re.fullmatch(r"(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text, re.ASCII):
        raise ValueError(text)
    value = float(text)  # '1e999' is inf
    low, high = POLL_SECONDS
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(text)
    return value


def _jobs(text: str) -> int:
    text = text.strip()
    # int() also takes '\u0661', '+2' and '1_0'; the length check keeps int() off huge strings.
    if not re.fullmatch(r"\d{1,6}", text, re.ASCII):
        raise ValueError(text)
    value = int(text)
    low, high = JOBS_PER_GPU
    if not low <= value <= high:
        raise ValueError(text)
    return value


def _choice(choices: tuple[str, ...] | list[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.strip() not in choices:
            raise ValueError(text)
        return text.strip()

    return parse


def _home(text: str) -> Path:
    if not text.strip():
        raise ValueError(text)
    return resolve_home(text)


RULES: dict[str, Rule] = {
    "home": Rule(_home, "a folder path"),
    "engine": Rule(_choice(ENGINES), f"one of {', '.join(ENGINES)}"),
    "default_model": Rule(
        _choice(sorted(BUILTIN_MODELS)), f"a built-in model ({', '.join(sorted(BUILTIN_MODELS))})"
    ),
    "resource_poll_seconds": Rule(
        _seconds, f"a number of seconds from {POLL_SECONDS[0]:g} to {POLL_SECONDS[1]:g}"
    ),
    "jobs_per_gpu": Rule(_jobs, f"a whole number from {JOBS_PER_GPU[0]} to {JOBS_PER_GPU[1]}"),
}
"""The rule of each setting, for its environment variable and its flag alike."""
