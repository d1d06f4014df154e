"""The status line at the top of every screen: mode tabs, the active model, live resources
(fitted to the width by `resource_line.fit_status`)."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from sage_tui.core.safe_text import visible
from sage_tui.studio import EngineState, EngineStatus
from sage_tui.ui.plain_text import plain
from sage_tui.ui.widgets.resource_line import (
    MODE_TABS,
    describe_resources,
    fit_status,
    mode_tabs,
)

__all__ = ["MODE_TABS", "StatusBar", "describe_resources", "engine_status_words"]

_TROUBLE = (EngineState.FAILED, EngineState.STOPPED)


def engine_status_words(engine: EngineStatus) -> str:
    """What the status line says about the engine: what a load is doing, or what went wrong;
    nothing while it serves or when no model is active."""
    if engine.state is EngineState.LOADING:
        return engine.detail or f"loading {engine.model}"
    if engine.state in _TROUBLE:
        return engine.line()
    return ""


class StatusBar(Horizontal):
    """Mode tabs, the active model and the latest resource figures.

    It reads the App's reactive state (`active_model`, `engine`, `resources`) and
    redraws when those change; it never fetches anything itself.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def compose(self) -> ComposeResult:
        yield Static(mode_tabs(self.mode), classes="status-tabs")
        yield Static(classes="status-model")
        yield Static(classes="status-resources")

    def on_mount(self) -> None:
        for name in ("active_model", "model_status", "engine", "resources"):
            self.watch(self.app, name, self._redraw)

    def on_resize(self, _: events.Resize) -> None:
        self._redraw()

    def _redraw(self, _: object = None) -> None:
        """Fit the tabs, the model and the figures to the width (`resource_line.fit_status`)."""
        app = self.app
        model = Text("model ", style="bold")
        model.append(plain(app.active_model or "none", style="cyan"))
        words = visible(app.model_status or engine_status_words(app.engine))
        if words:
            words = words if len(words) <= 48 else words[:47] + "…"
        trouble = app.engine.state in _TROUBLE
        status = Text(words, style="bold red" if trouble else "italic yellow")
        width = self.size.width
        parts = fit_status(width, self.mode, model, status, app.resources, trouble=trouble)
        self.query_one(".status-tabs", Static).update(parts.tabs)
        self.query_one(".status-model", Static).update(parts.model)
        self.query_one(".status-resources", Static).update(parts.resources)
