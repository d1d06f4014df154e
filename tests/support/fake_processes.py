"""A table of processes standing in for psutil: who holds a GPU is decided by fixed rows."""

from __future__ import annotations

from dataclasses import dataclass

from sage_tui.core.gpu_owners import ProcessDetails


@dataclass(frozen=True)
class Row:
    """One process as the table shows it."""

    parent: int
    user: str
    command: str


class TableProcesses:
    """A ProcessLookup over ``{pid: Row}``; a pid absent from the table cannot be seen."""

    def __init__(self, rows: dict[int, Row] | None = None) -> None:
        self.rows = dict(rows or {})
        self.parent_calls = 0
        self.forgotten = 0

    def parent(self, pid: int) -> int | None:
        self.parent_calls += 1
        row = self.rows.get(pid)
        return row.parent if row else None

    def details(self, pid: int) -> ProcessDetails | None:
        row = self.rows.get(pid)
        return ProcessDetails(row.user, row.command) if row else None

    def forget(self) -> None:
        self.forgotten += 1
