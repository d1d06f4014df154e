"""What a failed request tells the user: the engine died, or an adapter's folder went away."""

from __future__ import annotations

from pathlib import Path

from sage_tui.core.engines.base import Adapter, Engine
from sage_tui.errors import ModelError, SageError


class EngineStopped(SageError):
    """The engine that was serving died (its process was killed or crashed)."""


def request_failure(engine: Engine, adapter: Adapter | None, err: Exception) -> Exception:
    """What a failed request tells the user: the engine's death, an adapter folder deleted
    while it was in use (the engine's own words name neither the model nor why), or `err`."""
    gone = adapter is not None and not Path(adapter.path).is_dir()
    reason = engine.failure()
    if reason is not None:
        why = f" after the folder of {adapter.name} was deleted" if gone else ""
        return EngineStopped(f"engine stopped{why}: {reason}")
    if gone:
        return ModelError(
            f"the folder of {adapter.name} ({adapter.path}) was deleted while it was in use:"
            " re-register it or remove it on the Models screen"
        )
    return err
