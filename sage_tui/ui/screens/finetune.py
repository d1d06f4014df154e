"""The Finetune screen: dataset, hyperparameters, jobs and "use as backend"."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from sage_tui.ui.screens.base import StudioScreen


class FinetuneScreen(StudioScreen):
    """Fine-tuning jobs. The job form and list arrive with the training issue."""

    MODE = "finetune"

    def compose_body(self) -> ComposeResult:
        yield Static(
            "[b]Finetune[/b]\n\nPick a base model and a dataset, set the LoRA settings, start a"
            " job, then use the tuned adapter as the chat backend.\n\n"
            "[dim]Training is not built yet in this version.[/dim]",
            id="finetune-intro",
        )
