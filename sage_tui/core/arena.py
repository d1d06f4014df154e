"""Blind A/B votes between two models of one base, and the leaderboard they add up to.

A user sees two anonymous replies to one prompt and says which is better (A, B, a tie, or
both bad). Each vote is stored with the prompt and both replies, so it can be read again and
exported as a preference dataset. The leaderboard counts every model's games, a win rate with
its 95% Wilson interval, and a Bradley-Terry rating on the Elo scale. Pure Python: it runs on
a few thousand votes in milliseconds, no numpy.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sage_tui.core.atomic import write_atomic_with
from sage_tui.core.store import Store
from sage_tui.core.text_enum import TextEnum
from sage_tui.errors import SageError

Z_95 = 1.959963984540054
"""The normal quantile of a two-sided 95% interval."""
ELO_BASE, ELO_SCALE = 1000.0, 400.0
PRIOR_TIES = 1.0
"""Virtual ties each model plays against a reference of strength 1: an undefeated model gets
a finite rating, and one with a single game stays near the middle."""


class Verdict(TextEnum):
    """What the user said of the two replies."""

    A = "a"
    B = "b"
    TIE = "tie"
    BOTH_BAD = "both_bad"


class VoteError(SageError):
    """A vote that cannot be counted (an empty reply, one model on both sides, ...)."""


def parse_verdict(value: str | Verdict) -> Verdict:
    """`value` as a Verdict, or a VoteError naming the allowed ones."""
    try:
        return Verdict(value)
    except ValueError:
        allowed = ", ".join(v.value for v in Verdict)
        raise VoteError(f"unknown verdict {value!r}: choose one of {allowed}") from None


@dataclass(frozen=True)
class Vote:
    """One blind comparison: the prompt, both replies, which model gave which, the verdict."""

    base_model: str
    prompt: str
    model_a: str
    model_b: str
    reply_a: str
    reply_b: str
    verdict: Verdict
    created_at: float = 0.0
    id: int | None = None

    def check(self) -> Vote:
        """This vote with its verdict parsed, or a VoteError saying what is wrong with it."""
        if not self.prompt.strip():
            raise VoteError("a vote needs the prompt both replies answer: the prompt is empty")
        for side, reply in (("A", self.reply_a), ("B", self.reply_b)):
            if not reply.strip():
                raise VoteError(f"a vote needs both replies: reply {side} is empty")
        if not self.model_a.strip() or not self.model_b.strip():
            raise VoteError("a vote needs the names of both models")
        if self.model_a == self.model_b:
            raise VoteError(
                f"{self.model_a!r} is on both sides: a vote compares two different models"
            )
        if not self.base_model.strip():
            raise VoteError("a vote needs the base model both models share")
        return replace(self, verdict=parse_verdict(self.verdict))


class VoteStore:
    """Votes in the store's `votes` table."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, vote: Vote) -> Vote:
        """Check and save `vote`; returns it with its id and time. Nothing is saved when the
        check fails."""
        vote = vote.check()
        vote = replace(vote, created_at=vote.created_at or time.time())
        with self.store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO votes (base_model, prompt, model_a, model_b, reply_a, reply_b,"
                " verdict, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    vote.base_model,
                    vote.prompt,
                    vote.model_a,
                    vote.model_b,
                    vote.reply_a,
                    vote.reply_b,
                    vote.verdict.value,
                    vote.created_at,
                ),
            )
            return replace(vote, id=int(cursor.lastrowid))

    def all(self, base: str | None = None) -> list[Vote]:
        """Every vote (of models of `base`, when given), oldest first."""
        if base is None:
            rows = self.store.query("SELECT * FROM votes ORDER BY id")
        else:
            rows = self.store.query("SELECT * FROM votes WHERE base_model = ? ORDER BY id", (base,))
        return [_vote(row) for row in rows]

    def export_jsonl(self, path: str | Path, base: str | None = None) -> int:
        """Write the votes (of `base`, when given) to `path` as JSON Lines, atomically; returns
        how many were written."""
        votes = self.all(base)
        try:
            write_atomic_with(
                path,
                lambda handle: handle.writelines(
                    json.dumps(vote_fields(vote), ensure_ascii=False) + "\n" for vote in votes
                ),
            )
        except OSError as err:
            raise VoteError(f"cannot write the votes to {path}: {err.strerror or err}") from None
        return len(votes)


def vote_fields(vote: Vote) -> dict[str, object]:
    """A vote as plain JSON-ready fields (the export's row)."""
    return {**asdict(vote), "verdict": vote.verdict.value}


def _vote(row: sqlite3.Row) -> Vote:
    return Vote(**{**dict(row), "verdict": Verdict(row["verdict"])})


# -- the leaderboard --------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """One model's line of the leaderboard."""

    model: str
    rating: float
    """Bradley-Terry strength on the Elo scale: 1000 is the average of the models compared."""
    games: int
    wins: int
    losses: int
    ties: int
    """Ties and both-bad verdicts together."""
    both_bad: int
    win_rate: float
    """(wins + ties / 2) / games."""
    low: float
    high: float
    """The win rate's 95% Wilson score interval."""


def wilson_interval(score: float, games: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a rate `score` seen over `games` trials."""
    if games <= 0:
        return 0.0, 1.0
    z2n = z * z / games
    centre = score + z2n / 2
    spread = z * math.sqrt(score * (1 - score) / games + z2n / (4 * games))
    return max(0.0, (centre - spread) / (1 + z2n)), min(1.0, (centre + spread) / (1 + z2n))


def leaderboard(votes: Iterable[Vote]) -> list[Standing]:
    """Every model that played, best rating first (then by name)."""
    counts: dict[str, list[int]] = {}  # model -> [wins, losses, ties, both_bad]
    pairs: list[tuple[str, str, float]] = []  # (a, b, a's score: 1, 0 or 0.5)
    for vote in votes:
        a, b = counts.setdefault(vote.model_a, [0] * 4), counts.setdefault(vote.model_b, [0] * 4)
        if vote.verdict == Verdict.A:
            a[0], b[1], score = a[0] + 1, b[1] + 1, 1.0
        elif vote.verdict == Verdict.B:
            a[1], b[0], score = a[1] + 1, b[0] + 1, 0.0
        else:
            a[2], b[2], score = a[2] + 1, b[2] + 1, 0.5
            if vote.verdict == Verdict.BOTH_BAD:
                a[3], b[3] = a[3] + 1, b[3] + 1
        pairs.append((vote.model_a, vote.model_b, score))
    ratings = bradley_terry(pairs)
    standings = []
    for model, (wins, losses, ties, both_bad) in counts.items():
        games = wins + losses + ties
        rate = (wins + ties / 2) / games
        low, high = wilson_interval(rate, games)
        standings.append(
            Standing(model, ratings[model], games, wins, losses, ties, both_bad, rate, low, high)
        )
    return sorted(standings, key=lambda s: (-s.rating, s.model))


def bradley_terry(
    games: Sequence[tuple[str, str, float]], *, tolerance: float = 1e-10, rounds: int = 10_000
) -> dict[str, float]:
    """Elo-scale ratings fitted to `games` (first player, second, the first's score: 1, 0.5
    or 0) by Hunter's MM iteration, a tie half a win for each side.

    Each model also plays PRIOR_TIES virtual ties against a fixed reference of strength 1, so
    the fit exists whatever the results (a model that never lost is finite) and every model is
    tied to one scale even when the graph of who played whom is not connected.
    """
    score: dict[str, float] = {}
    met: dict[str, dict[str, int]] = {}
    for first, second, result in games:
        score[first] = score.get(first, 0.0) + result
        score[second] = score.get(second, 0.0) + 1 - result
        for one, other in ((first, second), (second, first)):
            met.setdefault(one, {})
            met[one][other] = met[one].get(other, 0) + 1
    if not score:
        return {}
    strength = dict.fromkeys(score, 1.0)
    for _ in range(rounds):
        updated = {}
        for model, played in met.items():
            wins = score[model] + PRIOR_TIES / 2
            against = PRIOR_TIES / (strength[model] + 1.0) + sum(
                n / (strength[model] + strength[other]) for other, n in played.items()
            )
            updated[model] = wins / against
        change = max(abs(math.log(updated[m] / strength[m])) for m in strength)
        strength = updated
        if change < tolerance:
            break
    centre = sum(math.log10(s) for s in strength.values()) / len(strength)
    return {m: ELO_BASE + ELO_SCALE * (math.log10(s) - centre) for m, s in strength.items()}
