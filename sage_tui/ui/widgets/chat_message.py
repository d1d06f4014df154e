"""One message in the chat transcript: who said it, the text as Markdown, and reply figures."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static

from sage_tui.core.safe_text import visible
from sage_tui.ui.plain_text import plain


class ChatMessage(Vertical):
    """A user message or a model reply. Replies stream into `body` through a MarkdownStream,
    which appends without re-rendering the whole transcript for every token.

    `text` is the message as it was written (saved, copied); what is shown has its terminal
    controls made visible. Links are not opened on a click: the screen shows where they go
    and opens them when asked (`open_links=False`).
    """

    def __init__(self, role: str, text: str = "", author: str = "", stats: str = "") -> None:
        super().__init__(classes=f"chat-message -{role}")
        self.role = role
        self.text = text
        self.author = author or ("you" if role == "user" else role)
        self.stats = stats

    def compose(self) -> ComposeResult:
        yield Static(plain(self.author), classes="chat-author")
        yield Markdown(visible(self.text), classes="chat-body", open_links=False)
        yield Static(plain(self.stats), classes="chat-stats")

    @property
    def body(self) -> Markdown:
        """The Markdown widget holding the text."""
        return self.query_one(".chat-body", Markdown)

    def set_author(self, author: str) -> None:
        """Name who wrote the message (a blind reply's model, once the vote is in)."""
        self.author = author
        self.query_one(".chat-author", Static).update(plain(author))

    def show_stats(self, line: str) -> None:
        """Put the figures line under the message."""
        self.stats = line
        self.query_one(".chat-stats", Static).update(plain(line))
