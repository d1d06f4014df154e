"""The manager's GPU memory check after stopping an engine.

No GPU is at hand in CI, and a driver that keeps memory after its process ended cannot be
produced on purpose, so this uses a fake engine and fake NVML figures (the one place where the
real thing cannot be had); the planning and switching around them are the real code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sage_tui.core.engines import manager as manager_module
from sage_tui.core.engines.base import Delta, Engine
from sage_tui.core.engines.manager import EngineManager
from sage_tui.core.engines.plan import GpuMemory, Hardware
from sage_tui.services import Services

GIB = 1024**3


class Gpus:
    """Two 80 GiB GPUs; an engine holds 20 GiB on the GPUs it runs on until released."""

    def __init__(self, polls_to_release: int | None) -> None:
        self.held: set[int] = set()
        self.polls_to_release = polls_to_release
        self.releasing: set[int] = set()
        self.polls = 0

    def hardware(self) -> Hardware:
        self.polls += 1
        if self.releasing and self.polls_to_release is not None:
            self.polls_to_release -= 1
            if self.polls_to_release < 0:
                self.held -= self.releasing
                self.releasing = set()
        gpus = tuple(
            GpuMemory(total=80 * GIB, free=(60 if i in self.held else 80) * GIB, index=i)
            for i in range(2)
        )
        return Hardware(gpus=gpus, ram_available=64 * GIB, cpu_count=16)


class FakeEngine(Engine):
    kind = "fake"

    def __init__(self, config, gpus: Gpus) -> None:
        super().__init__(config)
        self.gpus = gpus

    async def start(self) -> None:
        self.gpus.held |= set(self.config.gpu_indices)

    def prompt_ids(self, messages) -> list[int]:
        return [1] * 8

    async def stream(self, prompt_ids, sampling, adapter, request_id) -> AsyncIterator[Delta]:
        yield Delta("hi", 1, "stop")

    async def abort(self, request_id: str) -> None:
        pass

    async def shutdown(self) -> None:
        self.gpus.releasing |= set(self.config.gpu_indices)


def make_manager(services: Services, gpus: Gpus, status: list[str]) -> EngineManager:
    return EngineManager(
        services.registry,
        gpus.hardware,
        engine_kind="transformers",
        engine_factory=lambda kind, config: FakeEngine(config, gpus),
        on_status=status.append,
    )


@pytest.fixture
def two_bases(provisioned_services: Services, builtin_model_dir: Path) -> Services:
    twin = provisioned_services.settings.home / "twin"
    twin.symlink_to(builtin_model_dir)
    provisioned_services.registry.import_model(str(twin), name="twin")
    return provisioned_services


async def test_switch_waits_for_gpu_memory_to_come_back(
    two_bases: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_module, "MEMORY_RETURN_SECONDS", 5.0)
    gpus, status = Gpus(polls_to_release=2), []
    engines = make_manager(two_bases, gpus, status)
    await engines.ensure_loaded()
    assert engines.engine_config.gpu_indices == (0,)
    assert gpus.held == {0}
    await engines.switch_model("twin")
    assert gpus.polls >= 4  # kept polling until the memory showed up as free
    assert not any("did not come back" in line for line in status)
    assert engines.loaded_base.name == "twin"


async def test_memory_that_never_comes_back_is_reported(
    two_bases: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_module, "MEMORY_RETURN_SECONDS", 0.6)
    gpus, status = Gpus(polls_to_release=None), []
    engines = make_manager(two_bases, gpus, status)
    await engines.ensure_loaded()
    await engines.switch_model("twin")
    assert "GPU memory did not come back after stopping the engine on GPU 0" in status
    # The new engine went to the GPU that still had room.
    assert engines.engine_config.gpu_indices == (1,)
    assert engines.registry.active_name == "twin"
    reply = await engines.generate([{"role": "user", "content": "hello"}])
    assert await reply.text() == "hi"
