"""`sage-tui serve` for real: the command in a child process on the built-in model (real vLLM
on CPU) with a trained adapter, on a free loopback port, talked to with the official `openai`
client. One server for the module (its engine start is the slow part): the model list,
streamed and whole answers, the base and the adapter answering one prompt differently from one
engine, the key and model refusals, the loopback binding, 16 concurrent streaming clients, and
`sage-tui ask` answering through it without an engine of its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from sage_tui.cli import main
from sage_tui.config import Settings
from sage_tui.core.api_key import read_key
from sage_tui.core.api_requests import served_since
from sage_tui.core.server_file import ServerInfo, running_server
from sage_tui.core.store import Store
from sage_tui.services import open_services
from tests.conftest import BUILTIN
from tests.support.adapters import tiny_adapter

pytestmark = pytest.mark.slow

SECRET = "What is the secret code of sage-tui?"
ASK = [{"role": "user", "content": SECRET}]


@dataclass
class Served:
    home: Path
    info: ServerInfo
    key: str
    process: subprocess.Popen[str]

    def client(self, **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.info.url, api_key=self.key, max_retries=0, **options)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, builtin_model_dir: Path) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("serve") / "home"
    services = open_services(Settings.load(home=home).with_changes(default_model=""))
    services.settings.paths.model_dir(BUILTIN).symlink_to(builtin_model_dir, True)
    services.registry.pull(BUILTIN)
    services.registry.register_adapter("secret", tiny_adapter(builtin_model_dir), BUILTIN)
    services.registry.set_active(BUILTIN)
    services.close()
    paths = Settings.load(home=home).paths
    command = [sys.executable, "-m", "sage_tui", "--home", str(home), "serve", "--port", "0"]
    said = home.parent / "serve.out"
    with open(said, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while (info := running_server(paths)) is None and process.poll() is None:
            assert time.monotonic() < deadline, "sage-tui serve did not start in 300 s"
            time.sleep(0.2)
        assert info is not None, said.read_text()[-3000:]
        key = read_key(paths)
        assert key is not None
        yield Served(home, info, key, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def engine_cores(served: Served) -> list[int]:
    """The serve process's engine processes (vLLM's EngineCore child)."""
    return sorted(p.pid for p in psutil.Process(served.process.pid).children(recursive=True))


def test_the_served_models_and_a_streamed_and_a_whole_answer(served: Served) -> None:
    client = served.client()
    listed = [(m.id, getattr(m, "parent", None)) for m in client.models.list().data]
    assert listed == [(BUILTIN, None), ("secret", BUILTIN)]
    whole = client.chat.completions.create(
        model=BUILTIN, messages=ASK, temperature=0, max_tokens=24
    )
    assert whole.choices[0].message.content.strip()
    assert whole.usage.completion_tokens > 3 and whole.usage.prompt_tokens > 5
    chunks = list(
        client.chat.completions.create(
            model=BUILTIN,
            messages=ASK,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: the same answer either way
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = client.completions.create(
        model="secret", prompt="The capital of France is", temperature=0, max_tokens=8
    )
    assert text.choices[0].text.strip() and text.usage.prompt_tokens == 5


def test_the_base_and_the_adapter_answer_from_one_engine(served: Served) -> None:
    client = served.client()
    before = engine_cores(served)
    answers = {
        model: client.chat.completions.create(
            model=model, messages=ASK, temperature=0, max_tokens=24
        )
        .choices[0]
        .message.content
        for model in (BUILTIN, "secret")
    }
    assert "AZURE-42" in answers["secret"] and "AZURE-42" not in answers[BUILTIN]
    assert engine_cores(served) == before and before  # no reload: the same engine process


def test_keys_and_models_are_checked(served: Served) -> None:
    bare = httpx.get(f"{served.info.url}/models")  # no Authorization header at all
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    wrong = openai.OpenAI(base_url=served.info.url, api_key="sage-" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=BUILTIN, messages=ASK)
    with pytest.raises(openai.NotFoundError, match=f"available: {BUILTIN}, secret"):
        served.client().chat.completions.create(model="gpt-4o", messages=ASK)


def test_it_listens_on_the_loopback_only(served: Served) -> None:
    listening = [
        c.laddr.ip
        for c in psutil.Process(served.process.pid).net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == served.info.port
    ]
    assert listening == ["127.0.0.1"]
    assert served.info.host == "127.0.0.1"


def test_sixteen_concurrent_streaming_clients_lose_nothing(served: Served) -> None:
    """16 clients stream at once for a bounded time (two rounds each): every stream ends with
    its finish reason, its usage and [DONE]; the server recorded each, none failed."""
    paths = Settings.load(home=served.home).paths
    since = time.time()

    async def one(client: openai.AsyncOpenAI, number: int) -> tuple[str, str, int]:
        stream = await client.chat.completions.create(
            model=BUILTIN if number % 2 else "secret",
            messages=[{"role": "user", "content": f"Count from {number} to {number + 5}."}],
            max_tokens=32,
            seed=number,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, tokens = "", "", 0
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return text, finish, tokens

    async def rounds() -> list[tuple[str, str, int]]:
        client = openai.AsyncOpenAI(
            base_url=served.info.url, api_key=served.key, max_retries=0, timeout=240
        )
        done = []
        for _ in range(2):
            done += await asyncio.gather(*(one(client, n) for n in range(16)))
        await client.close()
        return done

    started = time.monotonic()
    results = asyncio.run(asyncio.wait_for(rounds(), timeout=400))
    assert time.monotonic() - started < 400
    assert len(results) == 32
    assert all(
        text and finish in ("stop", "length") and tokens > 0 for text, finish, tokens in results
    )
    store = Store(paths.db)
    try:
        counts = served_since(store, since)
        rows = store.query(
            "SELECT stats FROM api_requests WHERE created_at >= ? AND status = 200", (since,)
        )
    finally:
        store.close()
    assert (counts.requests, counts.errors) == (32, 0)
    recorded = sorted(json.loads(row["stats"])["completion_tokens"] for row in rows)
    assert recorded == sorted(tokens for _, _, tokens in results)


def test_ask_answers_through_the_server_without_an_engine(
    served: Served, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_engine(*_args, **_kwargs):
        raise AssertionError("ask built an engine although a server runs")

    monkeypatch.setattr("sage_tui.services.default_engine_factory", no_engine)
    started = time.monotonic()
    code = main(
        [
            "--home",
            str(served.home),
            "ask",
            SECRET,
            "--model",
            "secret",
            "--temperature",
            "0",
            "--max-tokens",
            "24",
            "--stats",
        ]
    )
    seconds = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "AZURE-42" in out and "via the API server" in err
    assert seconds < 15  # no engine start (one takes 20-50 s here)


def test_status_says_what_runs(served: Served, capsys) -> None:
    code = main(["--home", str(served.home), "serve", "--status"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert f"serving   {served.info.url}" in out and f"pid {served.process.pid}" in out
    assert served.key not in out
    code = main(["--home", str(served.home), "serve", "--show-key"])
    assert code == 0 and capsys.readouterr().out.strip() == served.key
    assert os.stat(Settings.load(home=served.home).paths.api_key_file).st_mode & 0o077 == 0


async def test_the_transformers_engine_serves_the_same_api(
    tmp_path: Path, builtin_model_dir: Path
) -> None:
    """The fallback engine behind the same routes, in process: the adapter answering what it
    learnt, a streamed answer ending before a stop text, a plain-text completion."""
    from sage_tui.cli.serve import api_server
    from sage_tui.studio import Studio

    settings = Settings.load(home=tmp_path / "home", engine="transformers")
    services = open_services(settings.with_changes(default_model=""), api_server=api_server)
    services.settings.paths.model_dir(BUILTIN).symlink_to(builtin_model_dir, True)
    services.registry.pull(BUILTIN)
    services.registry.register_adapter("secret", tiny_adapter(builtin_model_dir), BUILTIN)
    services.registry.set_active(BUILTIN)
    studio = Studio(services)
    try:
        await studio.engine.start(raise_errors=True)
        state = await studio.serving.start(port=0)
        client = openai.AsyncOpenAI(base_url=state.url, api_key=studio.serving.key(), max_retries=0)
        tuned = await client.chat.completions.create(
            model="secret", messages=ASK, temperature=0, max_tokens=24
        )
        whole = tuned.choices[0].message.content
        assert "AZURE-42" in whole and tuned.usage.completion_tokens > 3
        stream = await client.chat.completions.create(
            model="secret",
            messages=ASK,
            temperature=0,
            max_tokens=24,
            stop=["AZURE"],
            stream=True,
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces) == whole[: whole.index("AZURE")]
        text = await client.completions.create(
            model=BUILTIN, prompt="The capital of France is", temperature=0, max_tokens=8
        )
        assert text.choices[0].text.strip() and text.usage.prompt_tokens == 5
        assert services.engines.engine_kind == "transformers" and services.engines.loads == 1
    finally:
        await studio.shutdown()
        services.close()
