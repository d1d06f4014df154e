"""The "use as backend" confirmation (SAGE's 切换为对话后端 dialog)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from sage_tui.ui.plain_text import plain

TITLE = "切换为对话后端"
QUESTION = "确定要将此微调模型设置为 Studio 的对话后端吗？当前对话将使用此模型。"  # noqa: RUF001  SAGE's own words
QUESTION_EN = "Use this fine-tuned model as the chat backend? The chat will answer with it."


class UseBackendModal(ModalScreen[bool]):
    """Asks whether a finished job's adapter should become the chat's model; True for OK."""

    AUTO_FOCUS = "#use-backend-ok"
    BINDINGS = [
        Binding("escape", "answer(False)", "Cancel", id="use_backend.cancel"),
        Binding("enter", "answer(True)", "OK", id="use_backend.ok"),
    ]
    DEFAULT_CSS = """
    UseBackendModal {
        align: center middle;
    }
    UseBackendModal #use-backend-dialog {
        width: 72;
        height: auto;
        border: thick $accent;
        background: $surface;
        padding: 1 2;
    }
    UseBackendModal #use-backend-title {
        text-style: bold;
        margin-bottom: 1;
    }
    UseBackendModal #use-backend-model {
        color: $text-muted;
        margin-top: 1;
    }
    UseBackendModal #use-backend-buttons {
        height: auto;
        margin-top: 1;
        align-horizontal: right;
    }
    UseBackendModal Button {
        margin-left: 2;
    }
    """

    def __init__(self, model_name: str) -> None:
        super().__init__()
        self.model_name = model_name

    def compose(self) -> ComposeResult:
        with Vertical(id="use-backend-dialog"):
            yield Static(TITLE, id="use-backend-title")
            yield Static(QUESTION, id="use-backend-question")
            yield Static(QUESTION_EN, id="use-backend-question-en")
            yield Static(plain(f"model: {self.model_name}"), id="use-backend-model")
            with Horizontal(id="use-backend-buttons"):
                yield Button("Cancel", id="use-backend-cancel")
                yield Button("OK", variant="primary", id="use-backend-ok")

    def action_answer(self, confirmed: bool) -> None:
        """Close with the answer."""
        self.dismiss(confirmed)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "use-backend-ok")
