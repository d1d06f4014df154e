"""Exact duplicate rows, counted over a whole file in bounded memory.

Each converted record is reduced to an 8-byte digest; the digests and the lines they were
first seen on live in two flat arrays used as an open-addressing hash table (16 bytes a row,
where a set of Python ints would cost several times that), up to :data:`MAX_REMEMBERED` rows.
Rows after those are still compared with the ones remembered, and the warning says so.
"""

from __future__ import annotations

from array import array
from typing import Any

MAX_REMEMBERED = 1_000_000
"""Rows whose digests are kept; later rows are compared with these but not remembered."""

_FIRST_SLOTS = 1024


def digest(record: Any) -> int:
    """An 8-byte digest of a record of JSON values (never 0: 0 marks an empty slot).

    Python's own 64-bit string hash of its repr: quicker than JSON and a cryptographic hash,
    and as exact (two records are equal, keys in the same order, when their reprs are); it
    differs between processes, which is fine for digests compared within one pass.
    """
    value = hash(repr(record)) & 0xFFFF_FFFF_FFFF_FFFF
    return value or 1


class DuplicateCounter:
    """Counts rows whose record repeats an earlier one's, remembering where the first did."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self.limit = limit
        self.count = 0
        """Rows that repeat an earlier row."""
        self.first: tuple[int, int] | None = None
        """(line, line it repeats) for the first duplicate found."""
        self.remembered = 0
        self.full = False
        """True once `limit` rows are remembered (later ones are only compared)."""
        self._digests = array("Q", bytes(8 * _FIRST_SLOTS))
        self._lines = array("Q", bytes(8 * _FIRST_SLOTS))

    def _slot(self, value: int) -> int:
        mask = len(self._digests) - 1
        slot = value & mask
        digests = self._digests
        while digests[slot] and digests[slot] != value:
            slot = (slot + 1) & mask
        return slot

    def _grow(self) -> None:
        old_digests, old_lines = self._digests, self._lines
        size = len(old_digests) * 2
        self._digests = array("Q", bytes(8 * size))
        self._lines = array("Q", bytes(8 * size))
        for value, line in zip(old_digests, old_lines, strict=True):
            if not value:
                continue
            slot = self._slot(value)
            self._digests[slot], self._lines[slot] = value, line

    def add(self, record: Any, line: int) -> None:
        """Count one row's record, found at `line`."""
        value = digest(record)
        slot = self._slot(value)
        if self._digests[slot]:
            self.count += 1
            if self.first is None:
                self.first = (line, self._lines[slot])
            return
        if self.remembered >= self.limit:
            self.full = True
            return
        self._digests[slot], self._lines[slot] = value, line
        self.remembered += 1
        if self.remembered * 2 > len(self._digests):
            self._grow()

    def memory_bytes(self) -> int:
        """Bytes the table holds (16 a slot, the slots at most twice the rows remembered)."""
        return self._digests.itemsize * len(self._digests) * 2

    def warning(self, source: str, unit: str = "line") -> str | None:
        """The warning about the duplicates counted in file `source`, or None."""
        if not self.count or self.first is None:
            return None
        line, earlier = self.first
        rows = (
            "1 row is an exact duplicate"
            if self.count == 1
            else (f"{self.count} rows are exact duplicates")
        )
        cap = ""
        if self.full:
            cap = (
                f" (only the first {self.limit:,} distinct rows are remembered; later rows"
                " were compared with those)"
            )
        return (
            f"{source}: {rows} of earlier ones (first: {unit} {line} repeats {unit} {earlier}){cap}"
        )
