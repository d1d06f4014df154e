"""The engine's view of a registered adapter, and the lora ids that keep its cache honest."""

from __future__ import annotations

import itertools
from pathlib import Path

from sage_tui.core.engines.base import Adapter, EngineConfig
from sage_tui.core.models.adapters import read_adapter
from sage_tui.core.store import ModelRecord
from sage_tui.errors import ModelError


class AdapterIds:
    """Hands out a lora id per adapter folder and version of its weights, counting from 1."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, int], int] = {}
        self._next = itertools.count(1)

    def adapter(self, record: ModelRecord) -> Adapter:
        """The Adapter an engine is given for registered adapter `record`; ModelError if gone."""
        if not Path(record.path).is_dir():
            raise ModelError(
                f"the folder of {record.name} ({record.path}) no longer exists:"
                " re-register it or remove it on the Models screen"
            )
        info = read_adapter(Path(record.path))
        # A new id whenever the weights change: vLLM caches by id, and a re-trained adapter
        # under an old id would serve stale prefix-cache entries.
        key = (record.path, info.weights_mtime_ns)
        if key not in self._ids:
            self._ids[key] = next(self._next)
        return Adapter(record.name, record.path, info.rank, self._ids[key])

    def for_request(
        self, record: ModelRecord, base: ModelRecord, engine: EngineConfig
    ) -> Adapter | None:
        """What a request from `record` names on an engine serving `base`: None for the base
        itself, its Adapter for one of its adapters; ModelError naming what does not fit."""
        if record.kind != "adapter":
            if record.name != base.name:
                raise ModelError(
                    f"{record.name} is not loaded (the engine runs {base.name}): switch to it first"
                )
            return None
        if record.base_model != base.name:
            raise ModelError(
                f"adapter {record.name} belongs to {record.base_model}, but the engine runs"
                f" {base.name}: switch to {record.name} to load its base"
            )
        adapter = self.adapter(record)
        if adapter.rank > engine.max_lora_rank:
            raise ModelError(
                f"adapter {record.name} has rank {adapter.rank}, above the engine's"
                f" {engine.max_lora_rank}: switch to it to reload the engine"
            )
        return adapter
