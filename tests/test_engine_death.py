"""The real vLLM engine's EngineCore process killed mid-reply (as the OOM killer would): the
reply ends, the studio says the engine stopped and why, and the next message reloads it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from sage_tui.core.engines.base import Sampling
from sage_tui.core.engines.manager import EngineStopped
from sage_tui.studio import EngineState
from tests.conftest import FakeMonitor, no_gpu_snapshot
from tests.support.load import vllm_studio

pytestmark = pytest.mark.slow
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def engine_cores() -> list[psutil.Process]:
    """This process's vLLM EngineCore children (a child that ended meanwhile, or a zombie an
    earlier test left unreaped, is not one)."""
    cores = []
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
                cores.append(child)
        except psutil.Error:
            continue
    return cores


async def test_a_killed_engine_core_is_noticed_and_the_next_message_reloads(
    settings, builtin_model_dir: Path
) -> None:
    services, studio = vllm_studio(settings, builtin_model_dir, FakeMonitor(no_gpu_snapshot()))
    try:
        await studio.engine.start(raise_errors=True)
        cores = engine_cores()
        assert cores, "no EngineCore child process found"
        reply = await studio.engine.reply(STORY, Sampling(temperature=0.0, max_tokens=400))
        pieces = []
        with pytest.raises(EngineStopped, match="engine stopped: its EngineCore process"):
            async for piece in reply:
                pieces.append(piece)
                if len(pieces) == 3:
                    for core in cores:
                        core.send_signal(signal.SIGKILL)
        assert len(pieces) >= 3 and reply.stats.finish_reason == "abort"
        await studio.engine.check_health()
        assert studio.engine.status.state is EngineState.STOPPED
        assert "killed" in studio.engine.status.error or "stopped" in studio.engine.status.error

        answer = await (await studio.engine.reply(FRANCE, Sampling(0.0, 1.0, 24))).text()
        assert "Paris" in answer
        assert studio.engine.status.state is EngineState.READY
        assert services.engines.loads == 2
    finally:
        await studio.shutdown()
        services.close()
