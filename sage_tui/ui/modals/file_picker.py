"""Pick a dataset file or a folder without typing its path: a `DirectoryTree` in a modal.

The tree shows folders (a Hugging Face `save_to_disk` folder is a dataset too, and docs come
as a folder) and only the files the picker is for: dataset files (`SUPPORTED_EXTENSIONS`) or
Markdown. It starts at the folder of the path already typed, goes up to the parent folder, and
takes a typed path. Names on disk are data: each label is a plain `Text` with its controls made
visible, so a file called `[bold]x.jsonl` shows as typed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

from rich.text import Text, TextType
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Input, Static

from sage_tui.core.data import SUPPORTED_EXTENSIONS
from sage_tui.core.safe_text import visible
from sage_tui.ui.plain_text import plain

DOCS_EXTENSIONS = (".md", ".markdown")


def start_folder(typed: str, cwd: Path | None = None) -> Path:
    """Where the picker opens: the folder holding the typed path (its nearest existing
    ancestor when it does not exist yet), else the current directory."""
    here = cwd or Path.cwd()
    if not typed.strip() or "\x00" in typed:
        return here
    path = Path(typed.strip()).expanduser()
    if not path.is_absolute():
        path = here / path
    for folder in path.parents:
        try:
            if folder.is_dir():
                return folder
        except OSError:
            continue
    return here


def shown_path(path: Path, cwd: Path | None = None) -> str:
    """`path` as the form's box shows it: relative to the current directory when inside it."""
    here = cwd or Path.cwd()
    try:
        return str(path.relative_to(here))
    except ValueError:
        return str(path)


class DatasetTree(DirectoryTree):
    """A DirectoryTree that lists folders and files with one of `extensions`, hidden ones out."""

    def __init__(self, path: str | Path, extensions: Iterable[str], **kwargs) -> None:
        self.extensions = tuple(ext.lower() for ext in extensions)
        super().__init__(path, **kwargs)

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        """Folders and the wanted files; names starting with a dot are left out."""
        return [
            path
            for path in paths
            if not path.name.startswith(".")
            and (path.suffix.lower() in self.extensions or self._safe_is_dir(path))
        ]

    def process_label(self, label: TextType) -> Text:
        """A name on disk as plain text: no markup, controls visible, one line."""
        raw = label.plain if isinstance(label, Text) else str(label)
        return plain(visible(raw).replace("\n", "\u2424").replace("\t", "\u2409"))


class FilePickerModal(ModalScreen[Path | None]):
    """Dismissed with the picked file or folder, or None when cancelled.

    `folders_only`: picking is for a folder (the docs); files with `extensions` are listed so
    the user sees what a folder holds, and Enter on one picks the folder it is in.
    """

    AUTO_FOCUS = "#file-picker-tree"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="file_picker.cancel"),
        Binding("backspace", "parent", "Parent folder", id="file_picker.parent"),
        Binding("ctrl+f", "use_folder", "Use this folder", id="file_picker.folder"),
        Binding("ctrl+l", "type_path", "Type a path", id="file_picker.type"),
    ]
    DEFAULT_CSS = """
    FilePickerModal {
        align: center middle;
    }
    FilePickerModal #file-picker-dialog {
        width: 90%;
        max-width: 100;
        height: 80%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    FilePickerModal #file-picker-title {
        text-style: bold;
    }
    FilePickerModal #file-picker-path {
        margin-top: 1;
    }
    FilePickerModal #file-picker-tree {
        height: 1fr;
        margin-top: 1;
    }
    FilePickerModal #file-picker-problem {
        color: $error;
        height: auto;
    }
    FilePickerModal #file-picker-buttons {
        height: auto;
        margin-top: 1;
    }
    FilePickerModal #file-picker-buttons Button {
        margin-right: 2;
    }
    """

    def __init__(
        self,
        start: Path,
        *,
        title: str = "Pick a dataset file or folder",
        extensions: Iterable[str] = SUPPORTED_EXTENSIONS,
        folders_only: bool = False,
    ) -> None:
        super().__init__()
        self.start = Path(os.path.abspath(start))
        self.title_text = title
        self.extensions = tuple(extensions)
        self.folders_only = folders_only

    def compose(self) -> ComposeResult:
        with Vertical(id="file-picker-dialog"):
            yield Static(plain(self.title_text), id="file-picker-title")
            yield Input(
                str(self.start),
                placeholder="type a path, Enter to go there",
                id="file-picker-path",
                compact=True,
            )
            yield DatasetTree(self.start, self.extensions, id="file-picker-tree")
            yield Static("", id="file-picker-problem")
            with Horizontal(id="file-picker-buttons"):
                yield Button("Parent folder  backspace", id="file-picker-parent", compact=True)
                yield Button(
                    "Use this folder  ctrl+f",
                    id="file-picker-folder",
                    variant="primary" if self.folders_only else "default",
                    compact=True,
                )
                yield Button("Cancel  esc", id="file-picker-cancel", compact=True)

    @property
    def tree(self) -> DatasetTree:
        """The folder tree."""
        return self.query_one(DatasetTree)

    def _problem(self, text: str) -> None:
        self.query_one("#file-picker-problem", Static).update(plain(text))

    def go_to(self, folder: Path) -> None:
        """Show `folder` at the root of the tree."""
        folder = Path(os.path.abspath(folder))  # ".." folded, no disk read
        self.tree.path = folder
        self.query_one("#file-picker-path", Input).value = str(folder)
        self._problem("")

    # -- picking ------------------------------------------------------------------------------

    @on(DirectoryTree.FileSelected)
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(event.path.parent if self.folders_only else event.path)

    def action_use_folder(self) -> None:
        """Pick the folder under the cursor (or the tree's own folder when none is)."""
        node = self.tree.cursor_node
        folder = Path(self.tree.path)
        if node is not None and node.data is not None and node is not self.tree.root:
            path = node.data.path
            folder = path if node.allow_expand else path.parent
        self.dismiss(folder)

    def action_parent(self) -> None:
        """Show the folder above the current one."""
        folder = Path(os.path.abspath(self.tree.path))
        if folder.parent != folder:
            self.go_to(folder.parent)

    def action_type_path(self) -> None:
        """Focus the path box."""
        self.query_one("#file-picker-path", Input).focus()

    def action_cancel(self) -> None:
        """Close without picking."""
        self.dismiss(None)

    @on(Button.Pressed, "#file-picker-parent")
    def _parent_pressed(self) -> None:
        self.action_parent()

    @on(Button.Pressed, "#file-picker-folder")
    def _folder_pressed(self) -> None:
        self.action_use_folder()

    @on(Button.Pressed, "#file-picker-cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    @on(Input.Submitted, "#file-picker-path")
    async def _path_typed(self, event: Input.Submitted) -> None:
        event.stop()
        typed = event.value.strip()
        if not typed or "\x00" in typed:
            self._problem("Type a folder or a file path.")
            return
        path = Path(typed).expanduser()
        # A stat can hang on a network drive: off the event loop.
        kind = await asyncio.to_thread(_kind, path)
        if kind == "folder":
            self.go_to(path)
            self.tree.focus()
        elif kind == "file" and not self.folders_only:
            self.dismiss(path)
        elif kind == "file":
            self.go_to(path.parent)
        else:
            self._problem(f"{typed}: no such file or folder")


def _kind(path: Path) -> str:
    try:
        if path.is_dir():
            return "folder"
        if path.is_file():
            return "file"
    except OSError:
        pass
    return "missing"
