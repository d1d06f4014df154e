"""The Models screen's dialogs: confirm a delete, and ask for one value (a new name, a folder
to export to, a folder or Hugging Face id to import). Every text shown is data (plain)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from sage_tui.ui.plain_text import plain

DIALOG_CSS = """
{name} {{
    align: center middle;
}}
{name} .dialog {{
    width: 76;
    height: auto;
    border: thick $accent;
    background: $surface;
    padding: 1 2;
}}
{name} .dialog-title {{
    text-style: bold;
    margin-bottom: 1;
}}
{name} .dialog-buttons {{
    height: auto;
    margin-top: 1;
    align-horizontal: right;
}}
{name} Button {{
    margin-left: 2;
}}
"""


class ConfirmModal(ModalScreen[bool]):
    """A yes/no question (Enter: yes, Esc: no), e.g. "Delete X? Its folder is deleted."."""

    AUTO_FOCUS = "#confirm-cancel"
    BINDINGS = [Binding("escape", "answer(False)", "Cancel", id="confirm.cancel")]
    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmModal")

    def __init__(self, title: str, lines: list[str], ok: str) -> None:
        super().__init__()
        self.title_text, self.lines, self.ok = title, lines, ok

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(self.title_text), classes="dialog-title")
            for line in self.lines:
                yield Static(plain(line))
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="confirm-cancel")
                yield Button(self.ok, variant="error", id="confirm-ok")

    def action_answer(self, confirmed: bool) -> None:
        self.dismiss(confirmed)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-ok")


class AskModal(ModalScreen[str | None]):
    """One value typed in (Enter: done, Esc: cancel); an empty value is not accepted."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="ask.cancel")]
    DEFAULT_CSS = DIALOG_CSS.format(name="AskModal")

    def __init__(self, title: str, hint: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text, self.hint, self.value, self.placeholder = title, hint, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(self.title_text), classes="dialog-title")
            yield Static(plain(self.hint))
            yield Input(self.value, placeholder=self.placeholder, id="ask-value")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="ask-cancel")
                yield Button("OK", variant="primary", id="ask-ok")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._done()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ask-ok":
            self._done()
        else:
            self.dismiss(None)

    def _done(self) -> None:
        value = self.query_one(Input).value.strip()
        if value:
            self.dismiss(value)
        else:
            self.notify("Type a value first (Esc cancels).")
