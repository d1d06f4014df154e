"""The Models screen's API server line: where the OpenAI-compatible server listens, the requests
it answered and their errors, or why it is off; and the work behind the screen's keys that
start and stop it (s) and show its key (k).

The line follows the App's `server` reactive (the studio's ServerChanged), so it counts requests
as they are answered. Starting and stopping run as async workers on the App's loop (uvicorn
serves on that loop); the key file is read in a thread worker. Every text shown is data
(plain), and the key goes to the screen only, never to a log.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.widgets import Static
from textual.worker import Worker

from sage_tui.errors import SageError
from sage_tui.studio.serving import DEFAULT_PORT, LOOPBACK
from sage_tui.studio.state import ServerState
from sage_tui.ui.modals.api_key import ApiKeyModal
from sage_tui.ui.plain_text import plain
from sage_tui.ui.workers import forward_worker_failure

SERVE_HOST = LOOPBACK
SERVE_PORT = DEFAULT_PORT
"""Where the s key serves (tests set 0: any free port)."""


def server_text(server: ServerState) -> Text:
    """The server in one line: green while it serves, red when it could not start."""
    style = "green" if server.running else ("red" if server.error else "dim")
    return plain(server.line(), style=style)


class ServerLine(Static):
    """The API server's state in one line, and the toggle and key look-up behind its keys."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.changing = False
        """A start or a stop is under way (one at a time)."""

    def on_mount(self) -> None:
        self.watch(self.app, "server", self._show)

    def _show(self, server: ServerState) -> None:
        self.update(server_text(server))

    def toggle(self) -> None:
        """Start serving when off, stop when on (a press while one is under way is refused)."""
        if self.changing:
            self.notify("The API server is still starting or stopping.")
            return
        self.changing = True
        self._toggle()

    @work(exit_on_error=False, group="api-server", description="start or stop the API server")
    async def _toggle(self) -> None:
        desk = self.app.studio.serving
        try:
            if desk.state.running:
                await desk.stop()
                self.notify("API server stopped.")
            else:
                state = await desk.start(SERVE_HOST, SERVE_PORT, front="tui")
                self.notify(f"Serving {state.url} (k shows the key).")
        except SageError as err:
            self._failed(str(err))
        finally:
            self.changing = False

    def _failed(self, reason: str) -> None:
        # The line says it through the desk's published state; the toast says it at once.
        self.notify(reason, title="API server not started", severity="error", timeout=10)

    @work(thread=True, exit_on_error=False, group="api-key", description="read the API key")
    def show_key(self) -> None:
        """Read (or make) the key off the loop, then show it with how a client uses it."""
        desk = self.app.studio.serving
        try:
            key = desk.key()
        except (OSError, SageError) as err:
            self.app.call_from_thread(self.notify, str(err), title="No API key", severity="error")
            return
        state = desk.state
        url = state.url if state.running else ""
        modal = ApiKeyModal(key, str(desk.paths.api_key_file), url)
        self.app.call_from_thread(self.app.push_screen, modal)

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        forward_worker_failure(self, event)
