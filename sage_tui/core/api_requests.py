"""What the OpenAI-compatible API served: one row per request in the `api_requests` table,
with the reply's figures as a chat message keeps them (the performance panel reads both)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sage_tui.core.store import Store


@dataclass(frozen=True)
class ServedCounts:
    requests: int
    errors: int
    """Requests answered with a status of 400 or more."""


def record_request(
    store: Store, model: str, route: str, status: int, figures: dict | None = None
) -> None:
    """Keep one served request (`figures`: the reply's, None when there was no reply)."""
    with store.transaction() as db:
        db.execute(
            "INSERT INTO api_requests (model, route, status, stats, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (model, route, status, json.dumps(figures) if figures else None, time.time()),
        )


def served_since(store: Store, since: float) -> ServedCounts:
    """Requests served since `since` (seconds since the epoch), and how many failed."""
    row = store.query(
        "SELECT COUNT(*) AS requests, COALESCE(SUM(status >= 400), 0) AS errors"
        " FROM api_requests WHERE created_at >= ?",
        (since,),
    )[0]
    return ServedCounts(int(row["requests"]), int(row["errors"]))
