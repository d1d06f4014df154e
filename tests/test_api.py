"""The OpenAI-compatible API over the scripted engine, through the real FastAPI app and uvicorn
on a loopback port, talked to with the official `openai` client: what it serves, how it
answers (streamed and not, n, stop, completions), what it refuses and with which status, and
what it tells other programs (server.json, active_model.json, the request log, the figures)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from sage_tui.cli.serve import api_server
from sage_tui.core.api_requests import served_since
from sage_tui.core.performance import reply_performance
from sage_tui.core.server_file import running_server
from sage_tui.errors import SageError
from sage_tui.services import Services
from sage_tui.studio import Studio
from tests.conftest import BUILTIN
from tests.support.fake_engine import FakeEngines, adapter_folder
from tests.support.waiting import until

REPLY = "The capital of France is Paris."
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
async def studio(provisioned_services: Services, tmp_path: Path) -> AsyncIterator[Studio]:
    provisioned_services.api_server = api_server
    registry = provisioned_services.registry
    registry.register_adapter("facts", adapter_folder(tmp_path / "facts"), BUILTIN)
    registry.set_active(BUILTIN)
    studio = Studio(provisioned_services)
    await studio.engine.start(raise_errors=True)
    await studio.serving.start(port=0)
    yield studio
    await studio.shutdown()


@pytest.fixture
def client(studio: Studio) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=studio.serving.state.url, api_key=studio.serving.key(), max_retries=0
    )


async def test_the_models_are_the_served_base_and_its_adapters(client) -> None:
    listed = await client.models.list()
    assert [(m.id, getattr(m, "parent", None)) for m in listed.data] == [
        (BUILTIN, None),
        ("facts", BUILTIN),
    ]
    assert (await client.models.retrieve("facts")).owned_by == "sage-tui"


async def test_a_chat_completion_with_usage(client, engines: FakeEngines) -> None:
    answer = await client.chat.completions.create(
        model=BUILTIN, messages=ASK, temperature=0.0, top_p=0.5, max_tokens=40, seed=3
    )
    choice = answer.choices[0]
    assert choice.message.content == REPLY and choice.finish_reason == "stop"
    assert answer.model == BUILTIN and answer.id.startswith("chatcmpl-")
    assert answer.usage.completion_tokens == len(REPLY.split())
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + len(REPLY.split())
    sampling = engines.script.samplings[-1]
    assert (sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed) == (
        0.0,
        0.5,
        40,
        3,
    )


async def test_a_streamed_chat_completion_and_its_usage_chunk(client) -> None:
    stream = await client.chat.completions.create(
        model=BUILTIN, messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == REPLY and len(pieces) > 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(REPLY.split())


async def test_the_adapter_answers_with_no_reload(client, engines: FakeEngines) -> None:
    base = await client.chat.completions.create(model=BUILTIN, messages=ASK)
    tuned = await client.chat.completions.create(model="facts", messages=ASK)
    assert base.choices[0].message.content == REPLY
    assert tuned.choices[0].message.content == f"[facts] {REPLY}"
    assert len(engines.engines) == 1 and engines.script.adapters[-2:] == [None, "facts"]


async def test_n_choices_run_at_once_with_their_own_seeds(client, engines: FakeEngines) -> None:
    answer = await client.chat.completions.create(model=BUILTIN, messages=ASK, n=3, seed=7)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert {c.message.content for c in answer.choices} == {REPLY}
    assert sorted(s.seed for s in engines.script.samplings[-3:]) == [7, 8, 9]
    assert answer.usage.completion_tokens == 3 * len(REPLY.split())


@pytest.mark.parametrize(
    ("stop", "text"),
    [("France", "The capital of "), (["zzz", "ital of"], "The cap"), ("nowhere", REPLY)],
)
async def test_stop_texts_end_the_reply_before_them(client, stop, text: str) -> None:
    answer = await client.chat.completions.create(model=BUILTIN, messages=ASK, stop=stop)
    assert answer.choices[0].message.content == text
    assert answer.choices[0].finish_reason == "stop"
    stream = await client.chat.completions.create(
        model=BUILTIN, messages=ASK, stop=stop, stream=True
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces) == text


async def test_completions_of_two_prompts(client, engines: FakeEngines) -> None:
    answer = await client.completions.create(
        model="facts", prompt=["Paris is", "Rome is"], max_tokens=5
    )
    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.text == "[facts] The capital of France" for c in answer.choices)
    assert answer.usage.prompt_tokens == 4  # two words each, counted once per prompt
    stream = await client.completions.create(model=BUILTIN, prompt="Paris is", stream=True)
    assert "".join([c.choices[0].text async for c in stream if c.choices]) == REPLY


async def test_a_missing_or_wrong_key_is_refused_with_401(studio: Studio) -> None:
    url = studio.serving.state.url
    async with httpx.AsyncClient() as http:
        bare = await http.get(f"{url}/models")
    assert bare.status_code == 401
    assert "Authorization: Bearer" in bare.json()["error"]["message"]
    wrong = openai.AsyncOpenAI(base_url=url, api_key="sage-not-the-key-at-all", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        await wrong.chat.completions.create(model=BUILTIN, messages=ASK)
    assert refused.value.body["code"] == "invalid_api_key"
    assert "sage-not-the-key" not in refused.value.body["message"]


async def test_an_unknown_model_is_a_404_listing_the_served_ones(client) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        await client.chat.completions.create(model="gpt-4o", messages=ASK)
    body = refused.value.body
    assert body["code"] == "model_not_found" and body["param"] == "model"
    assert f"available: {BUILTIN}, facts" in body["message"]


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tool calling"),
        ({"temperature": "hot"}, "temperature", "valid number"),
        ({"temperature": 5}, None, "temperature 5.0 is outside 0..2"),
        ({"logprobs": True}, "logprobs", "not supported"),
        ({"response_format": {"type": "json_object"}}, "response_format", "only 'text'"),
        ({"n": 9}, "n", "1 to 8"),
        ({"n": 0}, "n", "1 to 8"),
        ({"max_tokens": 0}, None, "max tokens 0 must be at least 1"),
        ({"stop": ["a", "b", "c", "d", "e"]}, None, "at most 4"),
    ],
)
async def test_what_cannot_be_served_is_a_400_naming_it(client, extra, param, words) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=BUILTIN, messages=ASK, **extra)
    assert refused.value.body["param"] == param and words in refused.value.body["message"]


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([{"role": "usr", "content": "hi"}], "messages.0: unknown role 'usr'"),
        ([{"role": "tool", "content": "4", "tool_call_id": "x"}], "'tool' messages"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages.0.content.0: 'image_url' parts are not supported",
        ),
        ([], "'messages' is empty"),
        ([{"role": "user", "content": " "}], "the message is empty"),
    ],
)
async def test_messages_that_cannot_be_answered_are_named(client, messages, words) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=BUILTIN, messages=messages)
    assert words in refused.value.body["message"]


async def test_text_parts_are_joined(client, engines: FakeEngines) -> None:
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "France?"}]
    await client.chat.completions.create(
        model=BUILTIN,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": parts},
        ],
    )
    assert engines.script.prompts[-1] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is France?"},
    ]


async def test_not_json_is_a_400(studio: Studio) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{studio.serving.state.url}/chat/completions",
            content=b"{not json",
            headers={"Authorization": f"Bearer {studio.serving.key()}"},
        )
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]["message"]


async def test_it_listens_on_the_loopback_only(studio: Studio) -> None:
    port = int(studio.serving.state.url.rsplit(":", 1)[1].split("/")[0])
    listening = [
        c.laddr
        for c in psutil.Process(os.getpid()).net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert [address.ip for address in listening] == ["127.0.0.1"]


async def test_a_port_in_use_is_a_clear_error(studio: Studio) -> None:
    port = int(studio.serving.state.url.rsplit(":", 1)[1].split("/")[0])
    other = Studio(studio.services)
    with pytest.raises(SageError, match=f"port {port} on 127.0.0.1 is in use"):
        await other.serving.start(port=port)
    assert other.serving.state.error and not other.serving.state.running


async def test_other_programs_find_it_and_what_it_served_is_kept(studio: Studio, client) -> None:
    paths = studio.services.settings.paths
    info = running_server(paths)
    assert info is not None and info.url == studio.serving.state.url and info.pid == os.getpid()
    active = json.loads(paths.active_model_file.read_text())
    assert active["endpoint"] == info.url and active["api_model"] == BUILTIN
    assert active["api_key_file"] == str(paths.api_key_file)
    assert oct(paths.api_key_file.stat().st_mode & 0o777) == "0o600"

    await client.chat.completions.create(model="facts", messages=ASK)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=ASK)
    await studio.serving.stop()  # answers its last requests and records them first
    counts = served_since(studio.services.store, info.started_at)
    assert (counts.requests, counts.errors) == (2, 1)
    assert reply_performance(studio.services.store, "facts").replies == 1
    log = paths.api_log.read_text()
    assert "/v1/chat/completions model=facts status=200" in log
    assert studio.serving.key() not in log
    assert running_server(paths) is None
    assert "endpoint" not in json.loads(paths.active_model_file.read_text())


async def test_an_engine_that_dies_mid_stream_is_a_503_event(
    studio: Studio, client, engines: FakeEngines
) -> None:
    engines.script.die_after_tokens = 2
    stream = await client.chat.completions.create(model=BUILTIN, messages=ASK, stream=True)
    with pytest.raises(openai.APIError) as failed:
        async for _ in stream:
            pass
    assert "engine" in str(failed.value.message)
    engines.script.die_after_tokens = None
    answer = await client.chat.completions.create(model=BUILTIN, messages=ASK)  # a new engine
    assert answer.choices[0].message.content == REPLY and len(engines.engines) == 2


async def test_a_client_that_goes_away_stops_its_reply(
    studio: Studio, client, engines: FakeEngines
) -> None:
    engines.script.token_seconds = 0.05
    stream = await client.chat.completions.create(model=BUILTIN, messages=ASK, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    manager = studio.services.engines
    await until(lambda: not manager._replies)
    assert engines.current._aborted


async def test_a_second_server_on_one_home_is_refused(provisioned_services: Services) -> None:
    """Another process serves this home already (its server.json, pid 1: alive, and older
    than the file): the TUI's toggle and `serve` both say where instead of taking it over."""
    import time

    from sage_tui.core.server_file import ServerInfo, write_server

    paths = provisioned_services.settings.paths
    write_server(paths, ServerInfo("127.0.0.1", 8765, 1, time.time(), BUILTIN, "key"))
    provisioned_services.api_server = api_server
    provisioned_services.registry.set_active(BUILTIN)
    studio = Studio(provisioned_services)
    with pytest.raises(SageError, match=r"already runs at http://127.0.0.1:8765/v1 \(pid 1\)"):
        await studio.serving.start(port=0)
    assert running_server(paths).pid == 1  # left as it was
