"""Blind A/B comparison use cases: pair two models of one base, vote, read the leaderboard.

A front end asks for a :class:`BlindPair` (the two models in a random order it must not show),
gets a reply from each side, and records the user's verdict with :meth:`ArenaDesk.vote`; only
then does it show :meth:`BlindPair.reveal`. Validation lives in the core's `Vote.check`, the
table's wording in :func:`standing_cells`, so the CLI and the TUI say the same. Methods block
(the database): front ends call them from threads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sage_tui.core.arena import Standing, Verdict, Vote, VoteError, VoteStore, leaderboard

if TYPE_CHECKING:
    from sage_tui.core.store import ModelRecord
    from sage_tui.services import Services

LEADERBOARD_HEADINGS = ("model", "rating", "games", "W/L/T", "win rate")


@dataclass(frozen=True)
class BlindPair:
    """Two models of one base in the order shown to the user, as "A" and "B"."""

    base: str
    model_a: str
    model_b: str

    def reveal(self) -> str:
        """Who was who, for after the vote."""
        return f"A was {self.model_a}, B was {self.model_b}"


def base_name(record: ModelRecord) -> str:
    """The base model a record runs on: an adapter's base, a base model's own name."""
    return (record.base_model or record.name) if record.kind == "adapter" else record.name


def win_rate_text(standing: Standing) -> str:
    """A win rate with its 95% interval, the bounds joined by an en dash: `61% (48\u201373%)`."""
    return f"{standing.win_rate:.0%} ({standing.low * 100:.0f}\u2013{standing.high * 100:.0f}%)"


def standing_cells(standing: Standing) -> tuple[str, ...]:
    """One leaderboard row as text, in the order of LEADERBOARD_HEADINGS."""
    return (
        standing.model,
        f"{standing.rating:.0f}",
        str(standing.games),
        f"{standing.wins}/{standing.losses}/{standing.ties}",
        win_rate_text(standing),
    )


class ArenaDesk:
    """Blind votes between registered models of one base, over the services' store."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.votes = VoteStore(services.store)

    def blind_pair(self, first: str, second: str, rng: random.Random | None = None) -> BlindPair:
        """`first` and `second` in a random order; a ModelError if one is not registered, a
        VoteError if they are the same or run on different base models."""
        registry = self.services.registry
        records = [registry.get(first), registry.get(second)]
        if records[0].name == records[1].name:
            raise VoteError(f"{first!r} is on both sides: choose two different models")
        bases = [base_name(record) for record in records]
        if bases[0] != bases[1]:
            raise VoteError(
                f"{first!r} runs on {bases[0]!r} and {second!r} on {bases[1]!r}:"
                " a blind comparison needs two models of one base model"
            )
        (rng or random.Random()).shuffle(records)
        return BlindPair(bases[0], records[0].name, records[1].name)

    def vote(
        self, pair: BlindPair, prompt: str, reply_a: str, reply_b: str, verdict: str | Verdict
    ) -> Vote:
        """Record the user's verdict on the pair's replies to `prompt`; a VoteError (nothing
        saved) if the vote cannot be counted."""
        return self.votes.add(
            Vote(pair.base, prompt, pair.model_a, pair.model_b, reply_a, reply_b, verdict)
        )

    def stats(self, base: str | None = None) -> list[Standing]:
        """The leaderboard of every vote (of models of `base`, when given), best first."""
        return leaderboard(self.votes.all(base))

    def export(self, path: str | Path, base: str | None = None) -> int:
        """Write the votes as JSON Lines to `path`; returns how many."""
        return self.votes.export_jsonl(path, base)
