"""`sage-tui serve`: the studio's models over an OpenAI-compatible API, and `ask` through it.

`serve` loads the engine first (so the first request is answered at once), then listens on
127.0.0.1 (`--host` to bind wider, with a warning) until Ctrl-C or SIGTERM. `--status` says
what a running server serves and how much it answered; `--show-key` prints the key.
`sage-tui ask` answers through a running server with the official `openai` client when there
is one: no engine start, the answer in the time the reply takes.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from sage_tui.cli.output import AnswerWriter, show
from sage_tui.config import Settings
from sage_tui.core.engines.base import Sampling
from sage_tui.errors import SageError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def api_server(desk: Any, host: str, port: int, key: str) -> Any:
    """The server factory the composition root hands the studio (`Services.api_server`):
    FastAPI and uvicorn are imported only when serving starts."""
    from sage_tui.api.server import ApiServer

    return ApiServer(desk, host, port, key)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `serve` to the CLI."""
    from sage_tui.studio.serving import DEFAULT_PORT, LOOPBACK

    serve = commands.add_parser(
        "serve", help="serve the active model and its adapters over an OpenAI-compatible API"
    )
    serve.add_argument(
        "--host", default=LOOPBACK, help=f"address to listen on (default {LOOPBACK} only)"
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    serve.add_argument("--model", help="serve this model's base (default: the active model's)")
    serve.add_argument("--api-key", help="the key clients must send (stored for next time)")
    serve.add_argument("--show-key", action="store_true", help="print the API key and exit")
    serve.add_argument("--status", action="store_true", help="say whether a server runs")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from sage_tui.core.api_key import api_key

    if args.show_key:
        print(api_key(settings.paths.ensure()))
        return 0
    if args.status:
        return _status(settings)
    return _serve(settings, args)


def _status(settings: Settings) -> int:
    from sage_tui.core.api_requests import served_since
    from sage_tui.core.server_file import running_server
    from sage_tui.core.store import Store

    paths = settings.paths.ensure()
    info = running_server(paths)
    if info is None:
        print("no API server is running (start one with `sage-tui serve`)")
        return 1
    store = Store(paths.db)
    try:
        counts = served_since(store, info.started_at)
    finally:
        store.close()
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.started_at))
    front = "sage-tui serve" if info.front == "serve" else "the studio (TUI)"
    for line in (
        f"serving   {info.url}",
        f"model     {info.base_model} and its adapters (GET /v1/models lists them)",
        f"by        {front}, pid {info.pid}, since {since}",
        f"requests  {counts.requests} answered, {counts.errors} errors",
        f"key       in {info.key_file} (`sage-tui serve --show-key` prints it)",
    ):
        show(line)
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from sage_tui.core.server_file import refuse_second_server
    from sage_tui.services import open_services
    from sage_tui.studio import Studio
    from sage_tui.terminal import engine_output_to

    if not 0 <= args.port <= 65535:
        raise SageError(f"port {args.port} is outside 0..65535")
    paths = settings.paths
    refuse_second_server(paths)  # before the engine loads (the desk checks again at the start)
    studio = Studio(open_services(settings, api_server=api_server))
    registry = studio.services.registry
    if args.model is not None:
        registry.get(args.model)  # an unknown name fails before the engine starts
    elif registry.active_name is None:
        registry.pull(settings.default_model, progress=_say)
    if args.host not in LOOPBACK_HOSTS:
        _say(
            f"warning: listening on {args.host}: anyone who can reach this port can use the"
            " model with the key. Prefer the default 127.0.0.1 and `ssh -L`."
        )

    async def serve(out: TextIO, err: TextIO) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            show("loading the engine...", file=err)
            await studio.engine.start(args.model, raise_errors=True)
            state = await studio.serving.start(
                args.host, args.port, key=args.api_key, front="serve"
            )
            adapters = len(await asyncio.to_thread(studio.serving.models)) - 1
            show(f"serving {state.base_model} and {adapters} adapters at {state.url}", file=out)
            show(
                f"API key in {state.key_file} (`sage-tui serve --show-key` prints it);"
                " Ctrl-C stops",
                file=err,
            )
            await stop.wait()
            show("stopping...", file=err)
        finally:
            await studio.shutdown()
            studio.services.close()

    # The engine's own output goes to its log; what the server says goes to the terminal.
    with engine_output_to(paths.engine_log) as (out, err):
        asyncio.run(serve(out, err))
    return 0


def _say(line: str) -> None:
    show(line, file=sys.stderr)


def ask_server(
    settings: Settings,
    model: str | None,
    messages: list[dict[str, str]],
    sampling: Sampling,
    stats: bool,
) -> bool:
    """Answer through a running API server; False when there is none to use (or it does not
    serve `model`), and the caller starts an engine of its own."""
    from sage_tui.core.api_key import read_key
    from sage_tui.core.server_file import running_server

    paths = settings.paths
    info = running_server(paths)
    key = read_key(paths) if info is not None else None
    if info is None or key is None:
        return False
    import openai

    if model is None:
        from sage_tui.core.store import ACTIVE_MODEL_KEY, Store

        store = Store(paths.db)
        try:
            model = store.get_setting(ACTIVE_MODEL_KEY) or info.base_model
        finally:
            store.close()
    client = openai.OpenAI(base_url=info.url, api_key=key, max_retries=0, timeout=600)
    started = time.monotonic()
    try:
        chunks = client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        return _print_stream(chunks, started, model, stats)
    except (openai.APIConnectionError, openai.NotFoundError) as err:
        why = "did not answer" if isinstance(err, openai.APIConnectionError) else "does not serve"
        _say(f"note: the server at {info.url} {why} {model}; starting an engine of its own")
        return False
    except openai.APIStatusError as err:
        raise SageError(f"the server at {info.url} refused: {_api_message(err)}") from None


def _print_stream(chunks: Any, started: float, model: str, stats: bool) -> bool:
    writer = AnswerWriter(sys.stdout)
    first: float | None = None
    usage = None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.content:
                first = first if first is not None else time.monotonic() - started
                writer.write(choice.delta.content)
    writer.end()
    if stats:
        tokens = usage.completion_tokens if usage is not None else 0
        seconds = time.monotonic() - started
        first_line = f"first token {first:.2f} s · " if first is not None else ""
        _say(f"[{model} · via the API server · {first_line}{tokens} tokens in {seconds:.2f} s]")
    return True


def _api_message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(err)
