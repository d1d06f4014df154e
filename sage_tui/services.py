"""The services the App and the CLI share, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from sage_tui.config import Settings
from sage_tui.core.engines.manager import EngineManager
from sage_tui.core.engines.plan import hardware_from_snapshot
from sage_tui.core.gpu import ResourceMonitor
from sage_tui.core.gpu_scope import startup_scope
from sage_tui.core.models.registry import ModelRegistry
from sage_tui.core.store import Store


@dataclass
class Services:
    """What the studio works with: settings, the database, models, the engine, the GPUs."""

    settings: Settings
    store: Store
    registry: ModelRegistry
    monitor: ResourceMonitor
    engines: EngineManager


def open_services(settings: Settings) -> Services:
    """Create SAGE_HOME if needed, open the database, build the registry and the manager.

    Nothing here imports torch or vLLM or starts an engine: that happens on first use.
    """
    paths = settings.paths.ensure()
    store = Store(paths.db)
    registry = ModelRegistry(store, paths)
    # The user's CUDA_VISIBLE_DEVICES, captured before anything starts a child; the engine
    # plans and the queue places inside it.
    scope = startup_scope()
    monitor = ResourceMonitor(scope=scope)
    engines = EngineManager(
        registry,
        lambda: hardware_from_snapshot(monitor.sample(), scope),
        engine_kind=settings.engine,
    )
    return Services(settings, store, registry, monitor, engines)
