"""The file picker on its own: what it lists, how it moves, what it picks, hostile names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Input

from sage_tui.studio import EngineState, EngineStatus
from sage_tui.ui.app import SageApp
from sage_tui.ui.modals.file_picker import (
    DOCS_EXTENSIONS,
    DatasetTree,
    FilePickerModal,
    shown_path,
    start_folder,
)
from sage_tui.ui.widgets.token_preview import DatasetReport
from tests.support.waiting import until
from tests.test_finetune_screen import fill, make_app, open_finetune

__all__ = ["make_app"]  # the fixture, shared with the Finetune screen's tests

UNSET = object()


class PickerApp(App[None]):
    """Opens one picker and keeps what it was dismissed with."""

    def __init__(self, picker: FilePickerModal) -> None:
        super().__init__()
        self.picker = picker
        self.picked: object = UNSET

    def on_mount(self) -> None:
        def done(result: Path | None) -> None:
            self.picked = result

        self.push_screen(self.picker, done)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "data" / "notes.txt").write_text("not a dataset\n")
    (tmp_path / "data" / "table.csv").write_text("text\nx\n")
    (tmp_path / "data" / ".hidden.jsonl").write_text("{}\n")
    (tmp_path / "data" / "hf_saved").mkdir()
    (tmp_path / "data" / "hf_saved" / "state.json").write_text("{}")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Docs\n")
    return tmp_path


def labels(tree: DatasetTree) -> list[str]:
    return [node.label.plain for node in tree.root.children]


async def loaded(tree: DatasetTree) -> None:
    await until(lambda: tree.root.children)


def test_start_folder_is_the_typed_paths_folder(folder: Path) -> None:
    assert start_folder(str(folder / "data" / "train.jsonl")) == folder / "data"
    assert start_folder("data/train.jsonl", cwd=folder) == folder / "data"
    assert start_folder(str(folder / "data" / "hf_saved")) == folder / "data"  # its parent
    assert start_folder(str(folder / "data" / "new" / "x.jsonl")) == folder / "data"
    assert start_folder("", cwd=folder) == folder
    assert start_folder("a\x00b", cwd=folder) == folder
    assert shown_path(folder / "data" / "x.jsonl", cwd=folder) == str(Path("data", "x.jsonl"))
    assert shown_path(Path("/elsewhere/x.jsonl"), cwd=folder) == "/elsewhere/x.jsonl"


async def test_lists_folders_and_dataset_files_and_picks_one(folder: Path) -> None:
    app = PickerApp(FilePickerModal(folder / "data"))
    async with app.run_test(size=(100, 30)) as pilot:
        tree = app.screen.query_one(DatasetTree)
        await loaded(tree)
        # Folders first; no .txt, no hidden file.
        assert labels(tree) == ["hf_saved", "table.csv", "train.jsonl"]
        await pilot.press("down", "down", "down")  # root, hf_saved, table.csv, train.jsonl
        assert tree.cursor_node.data.path.name == "train.jsonl"
        await pilot.press("enter")
        await until(lambda: app.picked is not UNSET)
        assert app.picked == folder / "data" / "train.jsonl"


async def test_a_click_on_a_file_picks_it(folder: Path) -> None:
    app = PickerApp(FilePickerModal(folder / "data"))
    async with app.run_test(size=(100, 30)) as pilot:
        tree = app.screen.query_one(DatasetTree)
        await loaded(tree)
        await pilot.click(DatasetTree, offset=(8, 2))  # root, hf_saved, table.csv
        await until(lambda: app.picked is not UNSET)
        assert app.picked == folder / "data" / "table.csv"


async def test_goes_to_the_parent_folder_and_picks_a_folder(folder: Path) -> None:
    app = PickerApp(FilePickerModal(folder / "data"))
    async with app.run_test(size=(100, 30)) as pilot:
        tree = app.screen.query_one(DatasetTree)
        await loaded(tree)
        await pilot.press("backspace")
        await until(lambda: labels(tree) == ["data", "docs"])
        assert app.screen.query_one("#file-picker-path", Input).value == str(folder)
        await pilot.press("down")  # "data"
        await pilot.click("#file-picker-folder")
        await until(lambda: app.picked is not UNSET)
        assert app.picked == folder / "data"


async def test_a_typed_path_is_followed_and_a_typed_file_is_picked(folder: Path) -> None:
    app = PickerApp(FilePickerModal(folder))
    async with app.run_test(size=(100, 30)) as pilot:
        tree = app.screen.query_one(DatasetTree)
        await loaded(tree)
        await pilot.press("ctrl+l")
        box = app.screen.query_one("#file-picker-path", Input)
        box.value = str(folder / "nowhere")
        await pilot.press("enter")
        problem = app.screen.query_one("#file-picker-problem")
        await until(lambda: "no such file or folder" in str(problem.render()))
        box.value = str(folder / "data")
        await pilot.press("enter")
        await until(lambda: "train.jsonl" in labels(tree))
        box.value = str(folder / "data" / "table.csv")
        box.focus()
        await pilot.press("enter")
        await until(lambda: app.picked is not UNSET)
        assert app.picked == folder / "data" / "table.csv"


async def test_escape_cancels(folder: Path) -> None:
    app = PickerApp(FilePickerModal(folder))
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app.screen.query_one(DatasetTree))
        await pilot.press("escape")
        await until(lambda: app.picked is not UNSET)
        assert app.picked is None
        assert not isinstance(app.screen, FilePickerModal)


async def test_folder_mode_picks_the_folder_a_file_is_in(folder: Path) -> None:
    picker = FilePickerModal(folder, extensions=DOCS_EXTENSIONS, folders_only=True)
    app = PickerApp(picker)
    async with app.run_test(size=(100, 30)) as pilot:
        tree = app.screen.query_one(DatasetTree)
        await loaded(tree)
        assert labels(tree) == ["data", "docs"]
        await pilot.press("down", "down", "enter")  # expands "docs"
        await until(lambda: [n.label.plain for n in tree.cursor_node.children] == ["index.md"])
        await pilot.press("down", "enter")  # index.md: its folder is picked
        await until(lambda: app.picked is not UNSET)
        assert app.picked == folder / "docs"


HOSTILE_NAMES = [
    "[bold]x.jsonl",
    "[link=x]y[.jsonl",
    "\x1b[2Jz.jsonl",
    "a\u202eb.jsonl",
    "n\nl.jsonl",
]


async def test_hostile_file_names_show_as_typed(tmp_path: Path) -> None:
    for name in HOSTILE_NAMES:
        (tmp_path / name).write_text('{"text": "x"}\n')
    app = PickerApp(FilePickerModal(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        tree = app.screen.query_one(DatasetTree)
        await until(lambda: len(tree.root.children) == len(HOSTILE_NAMES))
        shown = labels(tree)
        assert "[bold]x.jsonl" in shown and "[link=x]y[.jsonl" in shown
        assert "\u241b[2Jz.jsonl" in shown  # ESC made visible
        assert "a\\u202eb.jsonl" in shown
        assert "n\u2424l.jsonl" in shown  # one line
        await pilot.pause()
        update = app.screen._compositor.render_full_update()
        # Textual's own colour and cursor sequences out: what is left is the text.
        written = re.sub(r"\x1b\[[0-9;:]*[mH]", "", update.render_segments(app.console))
        assert "[bold]x.jsonl" in written and "\u241b[2Jz.jsonl" in written
        assert "\x1b" not in written and "\u202e" not in written
        node = next(n for n in tree.root.children if n.label.plain == "[bold]x.jsonl")
        tree.move_cursor(node)
        await pilot.press("enter")
        await until(lambda: app.picked is not UNSET)
        assert app.picked == tmp_path / "[bold]x.jsonl"


# -- through the Finetune form ------------------------------------------------------------------


async def test_browse_fills_the_dataset_box_and_checks(make_app, tmp_path: Path) -> None:
    data = tmp_path / "picked"
    data.mkdir()
    (data / "qa.jsonl").write_text('{"instruction": "Hi?", "output": "Hello."}\n')
    app = make_app()
    async with app.run_test(size=(120, 50)) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=str(data / "old.jsonl"))  # not there: its folder is
        await pilot.press("ctrl+o")
        await until(lambda: isinstance(app.screen, FilePickerModal))
        tree = app.screen.query_one(DatasetTree)
        assert Path(tree.path) == data
        await until(lambda: labels(tree) == ["qa.jsonl"])
        await pilot.press("down", "enter")
        await until(lambda: not isinstance(app.screen, FilePickerModal))
        assert app.screen.query_one("#finetune-dataset", Input).value == str(data / "qa.jsonl")
        report = app.screen.query_one(DatasetReport)
        await until(lambda: report.pieces)
        assert "can train: 1 rows" in report.text

        await pilot.click("#finetune-browse")  # the button too; Escape leaves the box alone
        await until(lambda: isinstance(app.screen, FilePickerModal))
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, FilePickerModal))
        assert app.screen.query_one("#finetune-dataset", Input).value == str(data / "qa.jsonl")


def docs_folder(root: Path) -> Path:
    docs = root / "guide"
    docs.mkdir()
    (docs / "index.md").write_text(
        "# Widgetron\n\n## Presets\n\nA preset picks the batch size and the learning rate"
        " for the hardware you have.\n\n## Jobs\n\nA job trains one adapter and writes its"
        " checkpoints under the job folder.\n"
    )
    return docs


async def pick_folder(app: SageApp, pilot, folder: Path) -> None:
    """In the open picker: type the folder, go there, use it."""
    await until(lambda: isinstance(app.screen, FilePickerModal))
    assert app.screen.folders_only
    await pilot.press("ctrl+l")
    app.screen.query_one("#file-picker-path", Input).value = str(folder)
    await pilot.press("enter")
    await until(lambda: Path(app.screen.tree.path) == folder)
    await pilot.press("ctrl+f")


async def test_use_the_docs_writes_a_dataset_and_checks_it(make_app, tmp_path: Path) -> None:
    docs = docs_folder(tmp_path)
    app = make_app()
    async with app.run_test(size=(120, 50)) as pilot:
        await open_finetune(app, pilot)
        await until(lambda: app.engine.state is EngineState.READY)
        assert app.screen.query_one("#finetune-docs-model").display  # an engine is loaded
        await pilot.click("#finetune-docs")
        await pick_folder(app, pilot, docs)
        box = app.screen.query_one("#finetune-dataset", Input)
        await until(lambda: box.value.endswith("docs-guide.jsonl"))
        written = Path(box.value)
        assert written.parent == app.services.settings.paths.home / "datasets"
        rows = [json.loads(line) for line in written.read_text().splitlines()]
        assert len(rows) == 2  # templated: one row a section
        report = app.screen.query_one(DatasetReport)
        await until(lambda: report.pieces)
        assert "can train: 2 rows" in report.text
        assert any("2 rows from 2 sections" in n.message for n in app._notifications)


async def test_use_the_docs_with_questions_from_the_model(
    make_app, engines, tmp_path: Path
) -> None:
    docs = docs_folder(tmp_path)
    engines.script.reply = "How do presets work?\nWhat does a preset choose?"
    app = make_app()
    async with app.run_test(size=(120, 50)) as pilot:
        await open_finetune(app, pilot)
        await until(lambda: app.engine.state is EngineState.READY)
        await pilot.click("#finetune-docs-model")
        await pilot.click("#finetune-docs")
        await pick_folder(app, pilot, docs)
        box = app.screen.query_one("#finetune-dataset", Input)
        await until(lambda: box.value.endswith("docs-guide.jsonl"))
        await until(lambda: any("the model wrote" in n.message for n in app._notifications))
        rows = Path(box.value).read_text().splitlines()
        # Both questions name the presets section; the jobs section keeps its templated one.
        assert len(rows) == 3
        assert "How do presets work?" in rows[0] and "What does a preset choose?" in rows[1]
        assert "Jobs" in rows[2] or "jobs" in rows[2]
        assert len(engines.script.prompts) == 2  # the engine was asked once a section


async def test_use_the_docs_on_an_empty_folder_says_why(make_app, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    app = make_app()
    async with app.run_test(size=(120, 50)) as pilot:
        await open_finetune(app, pilot)
        await until(lambda: app.engine.state is EngineState.READY)
        app.engine = EngineStatus()  # no engine loaded: the model cannot write questions
        await pilot.pause()
        assert not app.screen.query_one("#finetune-docs-model").display
        await pilot.click("#finetune-docs")
        await pick_folder(app, pilot, empty)
        report = app.screen.query_one(DatasetReport)
        await until(lambda: report.has_class("-error"))
        assert "docs not turned into a dataset" in report.text
        assert app.screen.query_one("#finetune-dataset", Input).value == ""
