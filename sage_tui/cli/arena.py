"""The blind A/B commands: `arena vote` (two models of one base answer a prompt as A and B,
you vote, then their names are shown), `arena stats` (the leaderboard) and `arena export`
(the votes). Model names, prompts and replies are data: they go through `show`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from sage_tui.cli.output import show
from sage_tui.config import Settings

HOW_TO_VOTE = (
    "vote with `sage-tui arena vote PROMPT --model A --model B`: two models of one base answer"
    " the prompt blind, and you choose A, B, tie or both bad"
)
VERDICT_KEYS = {
    "a": "a",
    "b": "b",
    "t": "tie",
    "tie": "tie",
    "x": "both_bad",
    "both_bad": "both_bad",
}


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `arena vote`, `arena stats` and `arena export` to the CLI."""
    arena = commands.add_parser("arena", help="blind A/B votes, their leaderboard and export")
    actions = arena.add_subparsers(dest="arena_command", metavar="ACTION", required=True)
    vote = actions.add_parser("vote", help="two models answer blind as A and B; you vote")
    vote.add_argument("prompt")
    vote.add_argument("--model", action="append", required=True, help="give it twice")
    vote.add_argument("--max-tokens", type=int, default=256)
    vote.add_argument("--temperature", type=float, default=0.7)
    stats = actions.add_parser("stats", help="each model's rating, games and win rate")
    stats.add_argument("--base", help="only votes between models of this base model")
    stats.add_argument("--json", action="store_true", help="the leaderboard as JSON")
    export = actions.add_parser("export", help="write the votes as JSON Lines")
    export.add_argument("file", type=Path, help="the .jsonl file to write")
    export.add_argument("--base", help="only votes between models of this base model")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one of the commands added by `add_commands`."""
    from sage_tui.services import open_services
    from sage_tui.studio import Studio

    services = open_services(settings)
    try:
        studio = Studio(services)
        arena = studio.arena
        if args.arena_command == "vote":
            return _vote(studio, args)
        if args.arena_command == "stats":
            return _stats(arena, args)
        count = arena.export(args.file, args.base)
        show(f"{count} vote{'' if count == 1 else 's'} written to {args.file}")
        return 0
    finally:
        services.close()


def _vote(studio, args: argparse.Namespace) -> int:
    """Both replies as A and B, the verdict read from stdin, then the names."""
    import asyncio
    import sys

    from sage_tui.core.engines.base import Sampling
    from sage_tui.errors import SageError
    from sage_tui.terminal import engine_output_to

    if len(args.model) != 2:
        raise SageError(f"a blind vote needs two models (--model twice), got {len(args.model)}")
    if not args.prompt.strip():
        raise SageError("the prompt is empty: ask something")
    pair = studio.arena.blind_pair(*args.model)
    sampling = Sampling(args.temperature, 1.0, args.max_tokens).check()
    messages = [{"role": "user", "content": args.prompt}]

    async def answer() -> list:
        try:
            return await studio.compare.compare(messages, [pair.model_a, pair.model_b], sampling)
        finally:
            await studio.shutdown()

    with engine_output_to(studio.services.settings.paths.engine_log):
        replies = asyncio.run(answer())
    for label, one in zip("AB", replies, strict=True):
        show(f"== {label} ==")
        show(one.text if one.error is None else f"[failed: {one.error}]")
        show("")
    show("vote: a / b / t (tie) / x (both bad)? ", end="")
    sys.stdout.flush()
    typed = sys.stdin.readline().strip().lower()
    if typed not in VERDICT_KEYS:
        raise SageError(f"no vote recorded: {typed!r} is none of a, b, t, x")
    studio.arena.vote(pair, args.prompt, replies[0].text, replies[1].text, VERDICT_KEYS[typed])
    show(f"vote recorded. {pair.reveal()}")
    return 0


def _stats(arena, args: argparse.Namespace) -> int:
    from sage_tui.studio.arena import LEADERBOARD_HEADINGS, standing_cells

    standings = arena.stats(args.base)
    if args.json:
        show(json.dumps([asdict(s) for s in standings], indent=2, ensure_ascii=False))
        return 0
    if not standings:
        scope = f" between models of {args.base}" if args.base else ""
        show(f"no votes yet{scope}: {HOW_TO_VOTE}")
        return 0
    rows = [LEADERBOARD_HEADINGS, *(standing_cells(s) for s in standings)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(LEADERBOARD_HEADINGS))]
    for row in rows:
        # The model's name left, the figures right, as a table of numbers reads.
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        show("  ".join(cells).rstrip())
    return 0
