"""The blind A/B commands: `arena stats` (the leaderboard) and `arena export` (the votes).

Votes are cast in the studio, where two models of one base answer a prompt anonymously; these
commands read what was voted. Model names and prompts are data: they go through `show`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from sage_tui.cli.output import show
from sage_tui.config import Settings

HOW_TO_VOTE = (
    "vote in the studio (run sage-tui): two models of one base answer a prompt blind,"
    " and you choose A, B, tie or both bad"
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `arena stats` and `arena export` to the CLI."""
    arena = commands.add_parser("arena", help="the blind A/B votes' leaderboard and export")
    actions = arena.add_subparsers(dest="arena_command", metavar="ACTION", required=True)
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
        arena = Studio(services).arena
        if args.arena_command == "stats":
            return _stats(arena, args)
        count = arena.export(args.file, args.base)
        show(f"{count} vote{'' if count == 1 else 's'} written to {args.file}")
        return 0
    finally:
        services.close()


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
