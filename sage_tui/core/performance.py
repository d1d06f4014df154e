"""How fast a model has been answering: time to first token, tokens/s and the time a reply
took, averaged over its recent replies as the chat saved them (every reply keeps its figures)
and as the API recorded them (`api_requests`).

Replies that were cut off, failed, or stopped before their second token say nothing about
speed and are left out.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from sage_tui.core.store import Store

RECENT = 50
"""Replies the figures are taken over, newest first."""


@dataclass(frozen=True)
class ReplyPerformance:
    replies: int
    time_to_first_token: float
    """Mean seconds to the first token."""
    tokens_per_second: float
    """Mean decode speed."""
    seconds: float
    """Mean time a whole reply took."""

    def line(self) -> str:
        return (
            f"{self.replies} recent replies: first token {self.time_to_first_token:.2f} s ·"
            f" {self.tokens_per_second:.1f} tokens/s · {self.seconds:.1f} s a reply"
        )


def reply_performance(store: Store, model: str, recent: int = RECENT) -> ReplyPerformance | None:
    """The figures of `model`'s last `recent` replies with figures; None when it has none."""
    rows = store.query(
        "SELECT stats, created_at FROM messages WHERE role = 'assistant' AND model = ?"
        " AND stats IS NOT NULL AND stats != '{}'"
        " UNION ALL SELECT stats, created_at FROM api_requests WHERE model = ?"
        " AND stats IS NOT NULL ORDER BY created_at DESC LIMIT ?",
        (model, model, recent * 2),
    )
    kept: list[dict] = []
    for row in rows:
        try:
            figures = json.loads(row["stats"])
        except ValueError:
            continue
        if not isinstance(figures, dict) or figures.get("error") or figures.get("cut_off"):
            continue
        ttft, speed = figures.get("time_to_first_token"), figures.get("tokens_per_second")
        if not isinstance(ttft, int | float) or not isinstance(speed, int | float) or speed <= 0:
            continue
        kept.append(figures)
        if len(kept) == recent:
            break
    if not kept:
        return None
    return ReplyPerformance(
        replies=len(kept),
        time_to_first_token=statistics.fmean(f["time_to_first_token"] for f in kept),
        tokens_per_second=statistics.fmean(f["tokens_per_second"] for f in kept),
        seconds=statistics.fmean(float(f.get("seconds") or 0.0) for f in kept),
    )
