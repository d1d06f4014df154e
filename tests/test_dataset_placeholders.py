"""`{{name}}` placeholders: found, warned about, and filled from values when loading."""

from __future__ import annotations

from pathlib import Path

from sage_tui.core.data import fill_placeholders, find_placeholders, load_dataset_file
from tests.test_datasets import shared, write_rows


def test_identity_placeholders_warn_until_filled() -> None:
    loaded = load_dataset_file(shared("identity.json"))
    assert len(loaded.warnings) == 1
    warning = loaded.warnings[0]
    assert "identity.json" in warning and "{{name}}" in warning and "{{author}}" in warning
    assert set(find_placeholders(loaded.examples)) == {"name", "author"}

    filled = loaded.fill_placeholders({"name": "Sage", "author": "the SAGE team"})
    assert filled.warnings == []
    assert "I am Sage, an AI assistant developed by the SAGE team" in str(filled.examples)

    examples = fill_placeholders(loaded.examples, {"name": "Sage"})
    assert find_placeholders(examples) == {"author": find_placeholders(loaded.examples)["author"]}
    rows = fill_placeholders([{"output": "I am {{ name }}"}], {"name": "Sage"})
    assert rows == [{"output": "I am Sage"}]


def test_loading_fills_values_and_warns_only_about_the_rest(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "identity.jsonl",
        [
            {"instruction": "Who are you?", "output": "I am {{name}}, made by {{ author }}."},
            {"instruction": "Hi {{name}}", "output": "Hello!"},
            {"instruction": "Set {{x}}", "output": "{x} is not a placeholder"},
        ],
    )
    assert load_dataset_file(path).warnings == [
        f"{path}: 3 of 3 rows hold unfilled placeholders {{{{author}}}}, {{{{name}}}},"
        " {{x}}; fill them in before training"
    ]

    loaded = load_dataset_file(path, placeholders={"name": "Sage", "unused": "v"})
    chats = [e.messages for e in loaded.examples]
    assert chats[0] is not None and chats[1] is not None
    assert chats[0][-1]["content"] == "I am Sage, made by {{ author }}."
    assert chats[1][0]["content"] == "Hi Sage"
    assert [e.line for e in loaded.examples] == [1, 2, 3]
    assert loaded.warnings == [
        f"{path}: 2 of 3 rows hold unfilled placeholders {{{{author}}}}, {{{{x}}}};"
        " fill them in before training"
    ]

    done = load_dataset_file(path, placeholders={"name": "Sage", "author": "the team", "x": "1"})
    assert done.warnings == [] and find_placeholders(done.examples) == {}
    assert [e.messages for e in done.examples][2] == [
        {"role": "user", "content": "Set 1"},
        {"role": "assistant", "content": "{x} is not a placeholder"},
    ]
