"""`sage-tui compare`: one prompt answered by two to four models of one base, each reply under
its name (the Chat screen's compare mode, for scripts and SSH sessions without the TUI)."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from sage_tui.cli.output import AnswerWriter, show
from sage_tui.config import Settings
from sage_tui.core.engines.base import Sampling
from sage_tui.errors import SageError


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `compare` to the CLI."""
    defaults = Sampling()
    compare = commands.add_parser(
        "compare", help="one prompt answered by 2-4 models of one base, side by side"
    )
    compare.add_argument("prompt")
    compare.add_argument(
        "--model",
        action="append",
        required=True,
        help="a registered model or adapter; give it 2 to 4 times (one base model under all)",
    )
    compare.add_argument("--system", default="", help="system prompt")
    compare.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    compare.add_argument("--temperature", type=float, default=defaults.temperature)
    compare.add_argument("--top-p", type=float, default=defaults.top_p)
    compare.add_argument("--json", action="store_true", help="the replies and figures as JSON")


def prompt_request(args: argparse.Namespace) -> tuple[Sampling, list[dict[str, str]]]:
    """The sampling and the messages of a one-prompt command (`ask`, `compare`): the prompt
    after the system prompt, if any; SageError for an empty prompt or bad sampling."""
    sampling = Sampling(args.temperature, args.top_p, args.max_tokens).check()
    if not args.prompt.strip():
        raise SageError("the prompt is empty: ask something")
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    return sampling, messages


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Answer the prompt with every model at once; print each reply under its name."""
    import asyncio

    from sage_tui.core.chat import describe_stats, stats_figures
    from sage_tui.services import open_services
    from sage_tui.studio import Studio
    from sage_tui.terminal import engine_output_to

    sampling, messages = prompt_request(args)
    studio = Studio(open_services(settings))
    studio.compare.base_for(args.model)  # refused before the engine starts

    async def answer(out: TextIO) -> int:
        try:
            replies = await studio.compare.compare(messages, args.model, sampling)
        finally:
            await studio.shutdown()
        if args.json:
            rows = [
                {
                    "model": one.model,
                    "text": one.text,
                    "error": one.error,
                    "stats": stats_figures(one.stats) if one.stats else None,
                }
                for one in replies
            ]
            out.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        else:
            for one in replies:
                show(f"== {one.model} ==", file=out)
                writer = AnswerWriter(out)
                writer.write(one.text)
                writer.end()
                if one.error:
                    show(f"[failed: {one.error}]", file=out)
                elif one.stats is not None:
                    show(f"[{describe_stats(stats_figures(one.stats))}]", file=out)
                show("", file=out)
        return 1 if any(one.error for one in replies) else 0

    # The engine's own output goes to its log: stdout carries the replies alone.
    with engine_output_to(settings.paths.engine_log) as (out, _err):
        return asyncio.run(answer(out))
