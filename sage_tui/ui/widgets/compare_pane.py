"""Compare mode's widgets: one pane per model, and the bar that takes a blind vote.

A pane streams its model's reply into a Markdown widget through a MarkdownStream, fed from the
compare desk's synchronous piece callback: pieces wait in the pane and are written about twenty
times a second (`flush`), so four panes streaming at once cost four small appends per frame.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Markdown, Static
from textual.widgets._markdown import MarkdownStream

from sage_tui.core.arena import Verdict
from sage_tui.core.safe_text import VisibleStream
from sage_tui.ui.plain_text import plain
from sage_tui.ui.widgets.chat_message import ChatMessage


class ComparePane(Vertical):
    """One model's side of the comparison: its name (or A / B) and its transcript."""

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(classes="compare-pane", **kwargs)
        self.title = title
        self.answer: ChatMessage | None = None
        self._stream: MarkdownStream | None = None
        self._shown = VisibleStream()
        self._pending: list[str] = []
        self.parts: list[str] = []
        """The reply being streamed, as the model wrote it."""

    def compose(self) -> ComposeResult:
        yield Static(plain(self.title), classes="compare-title")
        yield VerticalScroll(classes="compare-transcript")

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one(".compare-transcript", VerticalScroll)

    def set_title(self, title: str) -> None:
        self.title = title
        self.query_one(".compare-title", Static).update(plain(title))

    async def show(self, messages: list[ChatMessage]) -> None:
        """Add finished messages (a reopened conversation's turns)."""
        await self.transcript.mount_all(messages)
        self.transcript.scroll_end(animate=False)

    async def start_turn(self, prompt: str, author: str) -> None:
        """Show the user's prompt and an empty reply that the pieces stream into."""
        self.answer = ChatMessage("assistant", author=author)
        self.parts, self._pending, self._shown = [], [], VisibleStream()
        await self.show([ChatMessage("user", prompt), self.answer])
        self._stream = Markdown.get_stream(self.answer.body)

    def feed(self, piece: str) -> None:
        """A piece of the reply (synchronous: the compare desk's callback)."""
        self.parts.append(piece)
        self._pending.append(piece)

    async def flush(self) -> None:
        """Write the pieces that arrived since the last flush."""
        if self._stream is not None and self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            await self._stream.write(self._shown.feed(text))
            self.transcript.scroll_end(animate=False)

    async def end_turn(self, text: str, stats: str, author: str | None = None) -> None:
        """The reply ended: its whole text, its figures line (and a new author, revealed)."""
        await self.flush()
        if self._stream is not None:
            await self._stream.write(self._shown.end())
            await self._stream.stop()
            self._stream = None
        if self.answer is not None:
            self.answer.text = text
            self.answer.show_stats(stats)
            if author is not None:
                self.answer.set_author(author)

    def reveal(self, author: str) -> None:
        """Name the model of the last reply (after a blind vote)."""
        if self.answer is not None:
            self.answer.set_author(author)


VOTE_KEYS = {"a": Verdict.A, "b": Verdict.B, "t": Verdict.TIE, "x": Verdict.BOTH_BAD}


class VoteBar(Static, can_focus=True):
    """Asks for the blind vote; one key casts it."""

    BINDINGS = [
        Binding("a", "vote('a')", "A is better", id="vote.a"),
        Binding("b", "vote('b')", "B is better", id="vote.b"),
        Binding("t", "vote('t')", "Tie", id="vote.tie"),
        Binding("x", "vote('x')", "Both bad", id="vote.both_bad"),
    ]

    class Cast(Message):
        """The user's verdict on the blind pair."""

        def __init__(self, verdict: Verdict) -> None:
            super().__init__()
            self.verdict = verdict

    def __init__(self, **kwargs) -> None:
        super().__init__(
            "Which reply is better?  a: A   b: B   t: tie   x: both bad", markup=False, **kwargs
        )

    def action_vote(self, key: str) -> None:
        self.post_message(self.Cast(VOTE_KEYS[key]))
