"""The transformers fallback engine on the real built-in model: streams, limits, abort, LoRA."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from sage_tui.core.engines.base import Adapter, Delta, EngineConfig, EngineError, Sampling
from sage_tui.core.engines.hf_engine import TransformersEngine

pytestmark = pytest.mark.slow

NAME = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = Sampling(temperature=0.0, max_tokens=24)


def make_config(path: Path | str) -> EngineConfig:
    return EngineConfig(model_name=NAME, model_path=str(path), max_model_len=2048, max_lora_rank=16)


@pytest.fixture(scope="module")
def engine(builtin_model_dir: Path) -> TransformersEngine:
    """One loaded engine for the module; loading is the slow part.

    The engine keeps no loop-bound state, so a sync fixture can start it on a loop of its own
    and every test can stream from its own loop.
    """
    built = TransformersEngine(make_config(builtin_model_dir))
    asyncio.run(built.start())
    yield built
    asyncio.run(built.shutdown())


async def collect(
    engine: TransformersEngine,
    sampling: Sampling = GREEDY,
    adapter: Adapter | None = None,
    rid: str = "r",
    messages: list[dict[str, str]] = QUESTION,
) -> list[Delta]:
    ids = engine.prompt_ids(messages)
    return [d async for d in engine.stream(ids, sampling, adapter, rid)]


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


async def test_greedy_reply_streams_paris(engine: TransformersEngine) -> None:
    deltas = await collect(engine)
    assert len(deltas) > 2
    assert "Paris" in text_of(deltas)
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].finish_reason in ("stop", "length")
    tokens = sum(d.tokens for d in deltas)
    assert tokens > 0
    # Every generated token is counted, the EOS (which decodes to nothing) included.
    retokenized = len(engine._tokenizer(text_of(deltas), add_special_tokens=False)["input_ids"])
    assert abs(tokens - retokenized) <= 2


async def test_max_tokens_ends_with_length(engine: TransformersEngine) -> None:
    deltas = await collect(engine, Sampling(temperature=0.0, max_tokens=4))
    assert deltas[-1].finish_reason == "length"
    assert sum(d.tokens for d in deltas) == 4


async def test_abort_mid_stream(engine: TransformersEngine) -> None:
    ids = engine.prompt_ids([{"role": "user", "content": "Write a long story about a dragon."}])
    deltas: list[Delta] = []
    async for delta in engine.stream(ids, Sampling(temperature=0.0, max_tokens=200), None, "ab"):
        if not deltas:
            await engine.abort("ab")
        deltas.append(delta)
    assert deltas[-1].finish_reason == "abort"
    assert sum(d.tokens for d in deltas) < 20


async def test_second_request_waits_its_turn(engine: TransformersEngine) -> None:
    alone = text_of(await collect(engine, Sampling(temperature=0.0, max_tokens=6)))
    both = await asyncio.gather(
        collect(engine, Sampling(temperature=0.0, max_tokens=6), rid="a"),
        collect(engine, Sampling(temperature=0.0, max_tokens=6), rid="b"),
    )
    assert [text_of(d) for d in both] == [alone, alone]


async def test_closing_the_stream_stops_generation(engine: TransformersEngine) -> None:
    ids = engine.prompt_ids(QUESTION)
    stream = engine.stream(ids, Sampling(temperature=0.0, max_tokens=200), None, "gone")
    await anext(stream)
    await stream.aclose()
    assert "gone" not in engine._requests
    # The next request gets the lock, which it could not before the abandoned one stopped.
    deltas = await asyncio.wait_for(collect(engine, Sampling(temperature=0.0, max_tokens=2)), 30)
    assert deltas[-1].finish_reason == "length"


async def test_adapter_changes_reply_per_request(
    engine: TransformersEngine, builtin_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(builtin_model_dir)
    # init_lora_weights=False draws B at random instead of zeros, so the adapter changes outputs.
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(base, lora).save_pretrained(tmp_path / "lora")
    del base
    adapter = Adapter(name="random", path=str(tmp_path / "lora"), rank=8, lora_id=1)

    # An open question: "Paris" is so certain that even a random adapter keeps it.
    joke = [{"role": "user", "content": "Tell me a joke."}]
    few = Sampling(temperature=0.0, max_tokens=12)
    plain = text_of(await collect(engine, few, messages=joke))
    adapted = text_of(await collect(engine, few, adapter, messages=joke))
    assert adapted != plain
    assert text_of(await collect(engine, few, messages=joke)) == plain
    assert text_of(await collect(engine, few, adapter, messages=joke)) == adapted


async def test_broken_adapter_names_its_folder(engine: TransformersEngine, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    adapter = Adapter(name="broken", path=str(broken), rank=8, lora_id=99)
    with pytest.raises(EngineError, match=re.escape(str(broken))):
        await collect(engine, adapter=adapter)
    # The engine still answers afterwards, on the base model.
    assert "Paris" in text_of(await collect(engine))


async def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("not a model")
    engine = TransformersEngine(make_config(tmp_path))
    with pytest.raises(
        EngineError, match=re.escape(f"cannot load {NAME} from {tmp_path}: ")
    ) as err:
        await engine.start()
    assert "\n" not in str(err.value)


def test_prompt_ids_end_with_the_assistant_header(engine: TransformersEngine) -> None:
    one = engine.prompt_ids(QUESTION)
    two = engine.prompt_ids([*QUESTION, {"role": "assistant", "content": "Paris."}])
    assert all(isinstance(t, int) for t in one)
    assert len(two) > len(one)
    tail = engine._tokenizer.decode(two[-4:])
    assert "assistant" in tail and tail.rstrip().endswith("assistant")


async def test_seeded_sampling_repeats(engine: TransformersEngine) -> None:
    sampled = Sampling(temperature=0.9, top_p=0.9, max_tokens=8, seed=7)
    story = [{"role": "user", "content": "Tell me a story."}]
    first = text_of(await collect(engine, sampled, messages=story))
    assert first and text_of(await collect(engine, sampled, messages=story)) == first


async def test_context_cap_and_shutdown_mid_stream(builtin_model_dir: Path) -> None:
    config = make_config(builtin_model_dir)
    engine = TransformersEngine(
        EngineConfig(NAME, config.model_path, max_model_len=64, max_lora_rank=16)
    )
    await engine.start()
    ids = engine.prompt_ids([{"role": "user", "content": "Tell me a story."}])
    room = 64 - len(ids)
    capped = [d async for d in engine.stream(ids, Sampling(0.0, max_tokens=500), None, "cap")]
    assert (sum(d.tokens for d in capped), capped[-1].finish_reason) == (room, "length")

    deltas: list[Delta] = []
    async for delta in engine.stream(ids, Sampling(0.0, max_tokens=500), None, "s"):
        if not deltas:
            await engine.shutdown()
        deltas.append(delta)
    assert deltas[-1].finish_reason == "abort"
    assert sum(d.tokens for d in deltas) < room
    assert engine._model is None
    with pytest.raises(EngineError, match="shut down"):
        await collect(engine)


async def test_reference_loss_is_lower_under_an_adapter_that_learnt_it(
    engine: TransformersEngine, builtin_model_dir: Path
) -> None:
    from tests.support.adapters import SECRET_FACTS, tiny_adapter

    question, answer = SECRET_FACTS[0]
    messages = [{"role": "user", "content": question}]
    adapter = Adapter("secret", str(tiny_adapter(builtin_model_dir)), rank=8, lora_id=7)
    base = await engine.score_reference(messages, answer, None)
    tuned = await engine.score_reference(messages, answer, adapter)
    assert base.tokens == tuned.tokens == 16  # the answer's 15 tokens and <|im_end|>
    assert tuned.loss < 0.1 < 1.0 < base.loss
    assert (await engine.score_reference(messages, answer, None)).loss == pytest.approx(base.loss)
