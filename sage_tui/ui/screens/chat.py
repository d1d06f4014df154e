"""The Chat screen: streaming multi-turn chat with the active model."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from sage_tui.ui.screens.base import StudioScreen


class ChatScreen(StudioScreen):
    """Chat with the active model. The transcript and input arrive with the engine issue."""

    MODE = "chat"

    def compose_body(self) -> ComposeResult:
        yield Static(
            "[b]Chat[/b]\n\nAsk the active model anything; replies stream in as they are"
            " generated.\n\n[dim]The chat engine is not built yet in this version.[/dim]",
            id="chat-intro",
        )
