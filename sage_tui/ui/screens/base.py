"""What every top-level screen shares: the status line on top, the key footer below."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker

from sage_tui.ui.widgets.status_bar import StatusBar
from sage_tui.ui.workers import forward_worker_failure


class StudioScreen(Screen):
    """A top-level mode screen. Subclasses set MODE and yield their body from compose_body."""

    MODE = ""

    def compose(self) -> ComposeResult:
        yield StatusBar(self.MODE)
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets, between the status line and the footer."""
        yield from ()

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        forward_worker_failure(self, event)
