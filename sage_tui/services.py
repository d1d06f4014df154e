"""The services the App and the CLI share, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from sage_tui.config import Settings
from sage_tui.core.models.registry import ModelRegistry
from sage_tui.core.store import Store


@dataclass
class Services:
    """What the studio works with: settings, the database and the model registry."""

    settings: Settings
    store: Store
    registry: ModelRegistry


def open_services(settings: Settings) -> Services:
    """Create SAGE_HOME if needed, open the database, build the registry."""
    paths = settings.paths.ensure()
    store = Store(paths.db)
    return Services(settings=settings, store=store, registry=ModelRegistry(store, paths))
