"""The status line at the top of every screen: mode tabs, the active model, live resources."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from sage_tui.core.gpu import ResourceSnapshot, format_bytes
from sage_tui.core.safe_text import visible
from sage_tui.studio import EngineState, EngineStatus
from sage_tui.ui.plain_text import plain

MODE_TABS = (
    ("finetune", "1", "Finetune"),
    ("models", "2", "Models"),
    ("chat", "3", "Chat"),
    ("compare", "4", "Compare"),
)


def describe_resources(snapshot: ResourceSnapshot | None) -> Text:
    """One line of figures: every GPU's memory and utilisation, or CPU and RAM without GPUs."""
    if snapshot is None:
        return Text("reading GPU figures...", style="dim")
    text = Text()
    if snapshot.gpus:
        for gpu in snapshot.gpus:
            share = gpu.memory_used / gpu.memory_total if gpu.memory_total else 0.0
            style = "red" if share > 0.9 else "yellow" if share > 0.7 else "green"
            util = "--" if gpu.utilization is None else f"{gpu.utilization}%"
            text.append(f"GPU{gpu.index} ", style="bold")
            text.append(
                f"{format_bytes(gpu.memory_used)}/{format_bytes(gpu.memory_total)}", style=style
            )
            text.append(f" {util}  ")
        if snapshot.gpu_error:
            text.append(plain(f"unread GPUs: {snapshot.gpu_error}", style="bold red"))
        return text
    if snapshot.gpu_error:
        # GPUs are there but cannot be read: not the same as a machine without GPUs.
        text.append(plain(f"GPUs unreadable: {snapshot.gpu_error}  ", style="bold red"))
    else:
        text.append(plain(f"no GPU: {snapshot.no_gpu_reason}  ", style="dim"))
    text.append("CPU ", style="bold")
    text.append(f"{snapshot.cpu_percent:.0f}%  ")
    text.append("RAM ", style="bold")
    text.append(f"{format_bytes(snapshot.ram_used)}/{format_bytes(snapshot.ram_total)}")
    return text


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
        tabs = Text()
        for mode, key, label in MODE_TABS:
            style = "reverse bold" if mode == self.mode else ""
            tabs.append(f" {key} {label} ", style=style)
        yield Static(tabs, classes="status-tabs")
        yield Static(classes="status-model")
        yield Static(classes="status-resources")

    def on_mount(self) -> None:
        self.watch(self.app, "active_model", self._show_model)
        self.watch(self.app, "model_status", self._show_model)
        self.watch(self.app, "engine", self._show_model)
        self.watch(self.app, "resources", self._show_resources)

    def _show_model(self, _: object = None) -> None:
        app = self.app
        text = Text("model ", style="bold")
        text.append(plain(app.active_model or "none", style="cyan"))
        status = visible(app.model_status or engine_status_words(app.engine))
        if status:
            status = status if len(status) <= 48 else status[:47] + "…"
            style = "bold red" if app.engine.state in _TROUBLE else "italic yellow"
            text.append(f"  {status}", style=style)
        self.query_one(".status-model", Static).update(text)

    def _show_resources(self, snapshot: ResourceSnapshot | None) -> None:
        self.query_one(".status-resources", Static).update(describe_resources(snapshot))
