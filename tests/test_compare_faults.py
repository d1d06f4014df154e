"""A compare whose adapter goes away under it: one pane ends with the reason, the others answer,
and the conversation keeps everything that was said.

On the scripted engine: on real vLLM the moment matters (an adapter whose weights the engine
already holds answers on without its folder; one it has not loaded yet fails, or on some
versions takes the EngineCore down), and that moment cannot be chosen from outside. The
scripted engine fails the request the way vLLM does when it reads a folder that is gone
("Loading lora X failed: No adapter found for PATH").
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sage_tui.core.engines.base import Sampling
from sage_tui.core.engines.reply import Reply
from sage_tui.services import Services
from sage_tui.studio import Studio
from tests.conftest import BUILTIN
from tests.support.fake_engine import FakeEngines, adapter_folder

REPLY = "The capital of France is Paris."
GREEDY = Sampling(temperature=0.0, max_tokens=32)


async def test_adapters_deleted_and_removed_while_compared_fail_their_panes_only(
    provisioned_services: Services, engines: FakeEngines, tmp_path: Path
) -> None:
    registry = provisioned_services.registry
    for name in ("deleted", "removed", "kept"):
        registry.register_adapter(name, adapter_folder(tmp_path / name), BUILTIN)
    engines.script.token_seconds = 0.01
    studio = Studio(provisioned_services)
    session = studio.compare_session()
    models = [BUILTIN, "deleted", "removed", "kept"]
    session.choose(models)
    try:
        first = await session.send("Where is Paris?", GREEDY)
        assert [r.error for r in first] == [None] * 4

        # Removed from the models between the pick and the message (the Models screen).
        registry.remove("removed")
        original = session.desk._one

        async def delete_once_sent(index, name, messages, sampling, on_piece, on_start):
            def started(pane: int, reply: Reply) -> None:
                if name == "deleted":  # accepted by the studio, not yet read by the engine
                    shutil.rmtree(tmp_path / "deleted")
                if on_start is not None:
                    on_start(pane, reply)

            return await original(index, name, messages, sampling, on_piece, started)

        session.desk._one = delete_once_sent
        second = await session.send("And Rome?", GREEDY)
    finally:
        await studio.shutdown()

    base, deleted, removed, kept = second
    assert base.error is None and base.text == REPLY
    assert kept.error is None and kept.text == f"[kept] {REPLY}"
    assert deleted.error == (
        f"the folder of deleted ({tmp_path / 'deleted'}) was deleted while it was in use:"
        " re-register it or remove it on the Models screen"
    )
    assert (
        removed.error == "removed was removed from the models after it was chosen: it cannot answer"
    )
    assert removed.text == "" and removed.stats is None

    # Everything said is kept: both prompts, every reply, each failed pane's reason.
    store = session.conversations
    messages = store.messages(session.conversation_id)
    assert [m.content for m in messages if m.role == "user"] == ["Where is Paris?", "And Rome?"]
    last = {m.model: m for m in messages[-4:]}
    assert last[BUILTIN].content == REPLY and last["kept"].content == f"[kept] {REPLY}"
    assert last["deleted"].stats["error"] == deleted.error
    assert last["removed"].stats["error"] == removed.error
    assert [m.content for m in messages[1:5]] == [
        REPLY,
        f"[deleted] {REPLY}",
        f"[removed] {REPLY}",
        f"[kept] {REPLY}",
    ]
    # Each model's thread still has both prompts; the failed panes answered only the first.
    assert [m["content"] for m in session.histories["deleted"]] == [
        "Where is Paris?",
        f"[deleted] {REPLY}",
        "And Rome?",
    ]
    assert len(session.histories[BUILTIN]) == 4
