"""The API key on request (k on the Models screen): the key, the file it is kept in, and how an
OpenAI client takes it. Every text shown is data (plain); Esc or Enter closes it."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from sage_tui.ui.modals.model_actions import DIALOG_CSS
from sage_tui.ui.plain_text import plain


def client_hint(url: str, key: str) -> str:
    """The line a Python client starts with (`URL` while the server is off)."""
    return f'client = OpenAI(base_url="{url or "URL"}", api_key="{key}")'


class ApiKeyModal(ModalScreen[None]):
    """The key, its file, the server's URL (or how to start it) and a client's first line."""

    AUTO_FOCUS = "#api-key-close"
    BINDINGS = [Binding("escape", "close", "Close", id="api-key.close")]
    DEFAULT_CSS = DIALOG_CSS.format(name="ApiKeyModal") + (
        "ApiKeyModal #api-key-hint { margin-top: 1; }"
    )

    def __init__(self, key: str, key_file: str, url: str) -> None:
        super().__init__()
        self.key, self.key_file, self.url = key, key_file, url

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("API key", classes="dialog-title")
            yield Static(plain(self.key, style="bold"), id="api-key-value")
            yield Static(plain(f"kept in {self.key_file}"), id="api-key-file")
            where = f"URL {self.url}" if self.url else "The server is off: s starts it."
            yield Static(plain(where), id="api-key-url")
            yield Static(plain(client_hint(self.url, self.key), style="italic"), id="api-key-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", variant="primary", id="api-key-close")

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed)
    def _pressed(self) -> None:
        self.dismiss(None)
