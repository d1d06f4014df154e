"""Enums whose members are plain words: stored, typed and printed as their value."""

from __future__ import annotations

from enum import Enum


class TextEnum(str, Enum):
    """A str-valued Enum that prints and formats as its value ("queued", not
    "JobStatus.QUEUED"), so it can go into the database, f-strings and tables unchanged."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)
