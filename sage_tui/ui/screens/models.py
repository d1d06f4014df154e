"""The Models screen: every registered base model and adapter, the active one marked."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from sage_tui.core.store import ModelRecord
from sage_tui.ui.messages import ModelsChanged, SwitchModelRequested
from sage_tui.ui.plain_text import plain
from sage_tui.ui.screens.base import StudioScreen


class ModelsScreen(StudioScreen):
    """A table of registered models; Enter makes the highlighted one the chat's model."""

    MODE = "models"
    BINDINGS = [Binding("enter", "use", "Use for chat", id="models.use")]

    def compose_body(self) -> ComposeResult:
        table: DataTable[str] = DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("", "name", "kind", "source", "base", "path")
        yield table

    def on_mount(self) -> None:
        self.load_models()

    def on_screen_resume(self) -> None:
        self.load_models()

    @on(ModelsChanged)
    def _reload(self) -> None:
        self.load_models()

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="models", description="read models"
    )
    def load_models(self) -> None:
        """Read the registry off the event loop, then fill the table."""
        models, active = self.app.studio.models.list(), self.app.services.registry.active_name
        self.app.call_from_thread(self._fill, models, active)

    def _fill(self, models: list[ModelRecord], active: str | None) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for model in models:
            # Plain Text cells: a `str` cell is parsed as markup ("[/INST]" raises).
            cells = (model.name, model.kind, model.source, model.base_model, model.path)
            table.add_row("*" if model.name == active else "", *map(plain, cells), key=model.name)

    def action_use(self) -> None:
        """Ask the App to switch the engine to the highlighted model."""
        table = self.query_one(DataTable)
        if table.row_count == 0:
            self.notify("No models are registered yet.")
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self.post_message(SwitchModelRequested(key))

    @on(DataTable.RowSelected)
    def _row_chosen(self, event: DataTable.RowSelected) -> None:
        self.post_message(SwitchModelRequested(event.row_key.value))
