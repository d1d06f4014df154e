"""The composition root: parse arguments, build settings and services, run the App or a command.

`sage-tui` with no command opens the studio; every other command is its headless twin for
scripts and servers without a TTY. Nothing heavy is imported here: the App module is imported
only when the studio opens, torch only inside the commands that need it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from sage_tui import __version__
from sage_tui.cli import arena as cli_arena
from sage_tui.cli import compare as cli_compare
from sage_tui.cli import data as cli_data
from sage_tui.cli import evaluate as cli_evaluate
from sage_tui.cli import models as cli_models
from sage_tui.cli import serve as cli_serve
from sage_tui.cli import training as cli_training
from sage_tui.cli.output import AnswerWriter, show
from sage_tui.config import ENGINES, Settings
from sage_tui.core.engines.base import Sampling
from sage_tui.core.private_files import keep_private
from sage_tui.errors import SageError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="sage-tui",
        description="Fine-tune a model with LoRA, use it as the chat backend, chat with it.",
    )
    parser.add_argument("--version", action="version", version=f"sage-tui {__version__}")
    parser.add_argument("--home", help="data folder (default $SAGE_HOME or ~/.sage)")
    parser.add_argument("--engine", choices=ENGINES, help="inference engine (default auto)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("doctor", help="show what sage-tui finds on this machine")

    ask = commands.add_parser("ask", help="one reply from the active (or a named) model")
    ask.add_argument("prompt")
    ask.add_argument("--model", help="a registered model or adapter (default: the active one)")
    ask.add_argument("--system", default="", help="system prompt")
    defaults = Sampling()
    ask.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    ask.add_argument("--temperature", type=float, default=defaults.temperature)
    ask.add_argument("--top-p", type=float, default=defaults.top_p)
    ask.add_argument("--stats", action="store_true", help="print time to first token, tokens/s")
    cli_models.add_commands(commands)
    cli_training.add_commands(commands)
    cli_data.add_commands(commands)
    cli_arena.add_commands(commands)
    cli_compare.add_commands(commands)
    cli_evaluate.add_commands(commands)
    cli_serve.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sage-tui` script; returns the exit code."""
    # Before anything is created: the home and everything in it stay the user's alone.
    keep_private()
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(home=args.home, engine=args.engine)
        if args.command == "doctor":
            return _doctor(settings)
        if args.command == "models":
            return cli_models.run(settings, args)
        if args.command == "ask":
            return _ask(settings, args)
        if args.command in ("finetune", "jobs", "use"):
            return cli_training.run(settings, args)
        if args.command == "data":
            return cli_data.run(settings, args)
        if args.command == "eval":
            return cli_evaluate.run(settings, args)
        if args.command == "compare":
            return cli_compare.run(settings, args)
        if args.command == "arena":
            return cli_arena.run(settings, args)
        if args.command == "serve":
            return cli_serve.run(settings, args)
        return _run_app(settings)
    except SageError as err:
        show(f"sage-tui: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _say(line: str) -> None:
    """Progress goes to stderr; results go to stdout."""
    show(line, file=sys.stderr)


def _doctor(settings: Settings) -> int:
    from sage_tui.core.doctor import run_checks, usable

    checks = run_checks(settings)
    marks = {True: "ok  ", False: "FAIL", None: "note"}
    width = max(len(c.name) for c in checks)
    for check in checks:
        show(f"[{marks[check.ok]}] {check.name:<{width}}  {check.detail}")
    ok = usable(checks)
    print(
        "sage-tui is ready to use."
        if ok
        else "sage-tui cannot run here until the FAIL lines are fixed."
    )
    return 0 if ok else 1


def _ask(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from sage_tui.core.chat import describe_stats, stats_figures
    from sage_tui.services import open_services
    from sage_tui.studio import Studio
    from sage_tui.terminal import engine_output_to

    sampling, messages = cli_compare.prompt_request(args)
    # A running API server answers at once: no engine of our own to start.
    if cli_serve.ask_server(settings, args.model, messages, sampling, args.stats):
        return 0
    studio = Studio(open_services(settings))
    registry = studio.services.registry
    if args.model is not None:
        registry.get(args.model)  # an unknown name fails before the engine starts
    elif registry.active_name is None:
        registry.pull(settings.default_model, progress=_say)

    async def answer(out: TextIO, err: TextIO) -> None:
        try:
            await studio.engine.start(args.model, raise_errors=True)
            reply = await studio.engine.reply(messages, sampling, model=args.model)
            # On a terminal the answer's controls are made visible; piped, it is the model's text.
            answer_out = AnswerWriter(out)
            async for piece in reply:
                answer_out.write(piece)
            answer_out.end()
            if args.stats:
                show(f"[{describe_stats(stats_figures(reply.stats))}]", file=err)
        finally:
            await studio.shutdown()

    # The engine's own output goes to its log: stdout carries the answer alone.
    with engine_output_to(settings.paths.engine_log) as (out, err):
        asyncio.run(answer(out, err))
    return 0


def _run_app(settings: Settings) -> int:
    from multiprocessing import resource_tracker

    from sage_tui.services import open_services
    from sage_tui.terminal import engine_output_to
    from sage_tui.ui.app import SageApp

    services = open_services(settings, api_server=cli_serve.api_server)
    # Started now, while stderr is a real file: started later under Textual (whose stderr has
    # no descriptor) it breaks vLLM's process spawning ("bad value(s) in fds_to_keep").
    resource_tracker.ensure_running()
    try:
        with engine_output_to(settings.paths.engine_log):
            SageApp(services).run()
    finally:
        services.close()
    return 0
