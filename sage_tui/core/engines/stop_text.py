"""Stop texts: a reply ends where one of them first appears, and it is not part of the reply.

Both engines get the same behaviour from the manager: streamed text passes through
:class:`StopText`, which holds back the end of the text while it could still be the start of a
stop text (so a stop text split across two deltas is still found, and never shown in part).
"""

from __future__ import annotations

from collections.abc import Sequence


class StopText:
    """Feed the reply's text as it streams; it returns what may be shown so far."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._held = ""
        self.stopped = False
        """True once a stop text was found: the reply ends there."""

    def feed(self, text: str) -> str:
        """The text that can be shown after `text` arrived ("" once stopped)."""
        if self.stopped or not self._stops:
            return "" if self.stopped else text
        held = self._held + text
        found = [i for i in (held.find(stop) for stop in self._stops) if i >= 0]
        if found:
            self.stopped, self._held = True, ""
            return held[: min(found)]
        keep = self._partial(held)
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep]

    def flush(self) -> str:
        """The text still held back, when the reply ended without a stop text."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial(self, text: str) -> int:
        """How many characters at the end of `text` begin some stop text."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
