"""The Models screen: base models as a tree with their adapters under them, the highlighted
model's details beside it, and the keys that manage models (each the twin of a `sage-tui
models` command): Enter use for chat, d delete, m merge, e export, i import, r rename; and the
OpenAI-compatible API server over the engine the chat has (the twin of `sage-tui serve`): s
starts or stops it, k shows its key, and a line under the performance panel shows its URL, the
requests it answered and their errors.

Every studio call runs in a thread worker (details read headers and walk folders; merge and
export take minutes); the screen shows what is under way and the result, and refreshes the
tree when the studio says the models changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Static, Tree

from sage_tui.core.gpu import format_bytes
from sage_tui.core.performance import ReplyPerformance, reply_performance
from sage_tui.core.store import ModelRecord
from sage_tui.errors import SageError
from sage_tui.studio.model_card import detail_lines
from sage_tui.studio.models import ModelDetails
from sage_tui.ui.messages import ModelsChanged, SwitchModelRequested
from sage_tui.ui.modals.model_actions import AskModal, ConfirmModal
from sage_tui.ui.plain_text import plain
from sage_tui.ui.screens.base import StudioScreen
from sage_tui.ui.widgets.server_line import ServerLine


def node_label(record: ModelRecord, active: str | None) -> Text:
    """A model's line in the tree: the active one starred, merged and job adapters marked."""
    label = Text("* " if record.name == active else "  ", style="bold")
    label.append_text(plain(record.name, style="bold" if record.name == active else ""))
    mark = {"merged": "merged", "finetune": "fine-tune", "builtin": "built-in"}.get(record.source)
    mark = mark or ("imported" if record.kind == "adapter" else record.source)
    label.append(f"  {mark}", style="dim")
    return label


def details_table(details: ModelDetails) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in detail_lines(details):
        table.add_row(plain(label), plain(value))
    return table


class ModelTree(Tree[str]):
    """The tree of models; Enter chats with the highlighted one, space folds a base."""

    BINDINGS = [Binding("enter", "select_cursor", "Use for chat", id="models.use")]


class ModelsScreen(StudioScreen):
    """The model tree, the details of the highlighted model, and the keys that manage it."""

    MODE = "models"
    BINDINGS = [
        Binding("d,delete", "delete", "Delete", id="models.delete"),
        Binding("m", "merge", "Merge", id="models.merge"),
        Binding("e", "export", "Export", id="models.export"),
        Binding("i", "import_model", "Import", id="models.import"),
        Binding("r", "rename", "Rename", id="models.rename"),
        Binding("s", "serve", "Serve API", id="models.serve"),
        Binding("k", "api_key", "API key", id="models.api_key"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.busy: str | None = None
        """What the screen is doing now (a merge, an export, an import), one at a time."""
        self.details: ModelDetails | None = None
        self.active_speed: tuple[str | None, ReplyPerformance | None] = (None, None)

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="models-layout"):
            tree = ModelTree("models", id="models-tree")
            tree.show_root = False
            tree.auto_expand = False
            yield tree
            with Vertical(id="models-side"):
                yield Static("", id="models-details")
                yield Static("", id="models-performance")
                yield ServerLine(id="models-server")
                yield Static("", id="models-activity", markup=False)

    def on_mount(self) -> None:
        self.query_one(Tree).focus()
        self.watch(self.app, "resources", self._show_performance)
        # Each request the API answered adds to the active model's figures.
        self.watch(self.app, "server", lambda _: self.read_performance(), init=False)
        self.load_models()

    def on_screen_resume(self) -> None:
        self.load_models()

    @on(ModelsChanged)
    def _reload(self) -> None:
        self.load_models()

    # -- reading ------------------------------------------------------------------------------

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="models", description="read models"
    )
    def load_models(self) -> None:
        """Read the registry off the event loop, then fill the tree."""
        tree, active = self.app.studio.models.tree(), self.app.services.registry.active_name
        self.app.call_from_thread(self._fill, tree, active)
        self._read_speed(active)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="performance",
        description="read the active model's figures",
    )
    def read_performance(self) -> None:
        self._read_speed(self.app.services.registry.active_name)

    def _read_speed(self, active: str | None) -> None:
        speed = reply_performance(self.app.services.store, active) if active else None
        self.app.call_from_thread(self._performance_read, active, speed)

    def _performance_read(self, active: str | None, speed: ReplyPerformance | None) -> None:
        self.active_speed = (active, speed)
        self._show_performance()

    def _show_performance(self, *_: object) -> None:
        """The active model's recent speed next to the GPUs' load (the performance panel)."""
        active, speed = self.active_speed
        text = Text("Performance", style="bold")
        text.append("\n")
        if active is None:
            text.append("no active model")
        else:
            text.append_text(plain(active))
            text.append(": " + (speed.line() if speed else "no replies yet"))
        resources = self.app.resources
        for gpu in resources.gpus if resources else ():
            used = f"{format_bytes(gpu.memory_used)}/{format_bytes(gpu.memory_total)}"
            load = "-" if gpu.utilization is None else f"{gpu.utilization}%"
            text.append(f"\nGPU{gpu.index} {load} busy · {used}")
        if resources is not None and not resources.gpus:
            text.append(f"\nCPU {resources.cpu_percent:.0f}% of {resources.cpu_count} cores")
        self.query_one("#models-performance", Static).update(text)

    def _fill(
        self, groups: list[tuple[ModelRecord, list[ModelRecord]]], active: str | None
    ) -> None:
        tree: Tree[str] = self.query_one(Tree)
        keep = self.selected
        tree.clear()
        line = 0
        for base, adapters in groups:
            label = node_label(base, active)
            if not adapters:
                tree.root.add_leaf(label, data=base.name)
                continue
            node = tree.root.add(label, data=base.name, expand=True)
            for adapter in adapters:
                node.add_leaf(node_label(adapter, active), data=adapter.name)
        for index in range(tree.last_line + 1):
            found = tree.get_node_at_line(index)
            if found is not None and found.data == keep:
                line = index
        if groups:
            tree.cursor_line = line
            self.read_details(tree.get_node_at_line(line).data)
        else:
            self.query_one("#models-details", Static).update(
                "No models are registered yet: i imports one."
            )

    @property
    def selected(self) -> str | None:
        node = self.query_one(Tree).cursor_node
        return None if node is None else node.data

    @on(Tree.NodeHighlighted)
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        if event.node.data is not None:
            self.read_details(event.node.data)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="model-details",
        description="read the model's details",
    )
    def read_details(self, name: str) -> None:
        try:
            details = self.app.studio.models.details(name)
        except SageError as err:
            self.app.call_from_thread(self._show_problem, str(err))
            return
        self.app.call_from_thread(self._show_details, details)

    def _show_details(self, details: ModelDetails) -> None:
        if details.record.name != self.selected:
            return
        self.details = details
        self.query_one("#models-details", Static).update(details_table(details))

    def _show_problem(self, problem: str) -> None:
        self.details = None
        self.query_one("#models-details", Static).update(plain(problem))

    # -- actions ------------------------------------------------------------------------------

    def _chosen_name(self) -> str | None:
        name = self.selected
        if name is None:
            self.notify("No models are registered yet.")
        return name

    @on(Tree.NodeSelected)
    def _chosen(self, event: Tree.NodeSelected) -> None:
        event.stop()
        if event.node.data is not None:
            self.post_message(SwitchModelRequested(event.node.data))

    def action_delete(self) -> None:
        name = self._chosen_name()
        if name is not None:
            self.ask_delete(name)

    @work(thread=True, exit_on_error=False, group="models-ask", description="check a delete")
    def ask_delete(self, name: str) -> None:
        desk = self.app.studio.models
        try:
            problem, effect = desk.why_not_delete(name), desk.delete_effect(name)
        except SageError as err:
            self.app.call_from_thread(self.notify, str(err), severity="error")
            return
        if problem is not None:
            self.app.call_from_thread(
                self.notify, problem, title=f"{name} cannot be deleted", severity="warning"
            )
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_action(f"deleting {name}", lambda _: desk.delete(name))

        modal = ConfirmModal(f"Delete {name}?", [effect[0].upper() + effect[1:] + "."], "Delete")
        self.app.call_from_thread(self.app.push_screen, modal, answered)

    def action_merge(self) -> None:
        details = self.details
        if details is None or details.record.kind != "adapter":
            self.notify("Merge takes an adapter: highlight one under its base model.")
            return
        name = details.record.name

        def answered(new: str | None) -> None:
            if new:
                self.run_action(
                    f"merging {name} into {details.record.base_model} as {new}",
                    lambda say: self.app.studio.models.merge(name, new, say).name + " registered",
                )

        hint = (
            f"{name} is merged into {details.record.base_model} as a new base model, then its"
            " greedy answers are checked against the adapter's (minutes on a CPU)."
        )
        self.app.push_screen(AskModal("Merge the adapter", hint, f"{name}-merged"), answered)

    def action_export(self) -> None:
        name = self._chosen_name()
        if name is None:
            return

        def answered(folder: str | None) -> None:
            if folder:
                self.run_action(
                    f"exporting {name} to {folder}",
                    lambda say: (
                        f"exported to {self.app.studio.models.export(name, Path(folder), say)}"
                    ),
                )

        hint = "A new or empty folder; it gets the model's files and a README card."
        self.app.push_screen(
            AskModal(f"Export {name}", hint, placeholder="~/exports/" + name), answered
        )

    def action_import_model(self) -> None:
        def answered(source: str | None) -> None:
            if source:
                self.run_action(
                    f"importing {source}",
                    lambda say: (
                        self.app.studio.models.import_model(source, progress=say).name
                        + " registered"
                    ),
                )

        hint = "A model folder, a LoRA adapter folder, or a Hugging Face id (org/name)."
        self.app.push_screen(
            AskModal("Import a model", hint, placeholder="Qwen/Qwen2.5-0.5B-Instruct"), answered
        )

    def action_rename(self) -> None:
        name = self._chosen_name()
        if name is None:
            return

        def answered(new: str | None) -> None:
            if new and new != name:
                self.run_action(
                    f"renaming {name}",
                    lambda _: f"{name} is now {self.app.studio.models.rename(name, new).name}",
                )

        hint = "Its adapters, jobs, votes and chats follow the new name."
        self.app.push_screen(AskModal(f"Rename {name}", hint, name), answered)

    def action_serve(self) -> None:
        """Serve the API over the chat's engine, or stop serving it."""
        self.query_one(ServerLine).toggle()

    def action_api_key(self) -> None:
        """Show the API key, its file and how a client takes them."""
        self.query_one(ServerLine).show_key()

    def run_action(self, what: str, call: Callable[[Callable[[str], None]], Any]) -> None:
        """Run one model action off the loop, its progress in the activity line."""
        if self.busy is not None:
            self.notify(f"Still {self.busy}; one model action at a time.")
            return
        self.busy = what
        self._activity(f"{what} ...")
        self._run(what, call)

    @work(thread=True, exit_on_error=False, group="models-action", description="a model action")
    def _run(self, what: str, call: Callable[[Callable[[str], None]], Any]) -> None:
        def say(line: str) -> None:
            self.app.call_from_thread(self._activity, f"{what}: {line}")

        try:
            done = str(call(say))
        except SageError as err:
            self.app.call_from_thread(self._ended, f"not done: {err}", True)
            return
        self.app.call_from_thread(self._ended, done, False)

    def _ended(self, line: str, failed: bool) -> None:
        self.busy = None
        self._activity(line)
        self.notify(line, severity="error" if failed else "information")
        self.load_models()

    def _activity(self, line: str) -> None:
        self.query_one("#models-activity", Static).update(plain(line))
