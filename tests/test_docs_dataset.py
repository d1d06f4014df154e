"""A Markdown docs folder turned into a Q&A dataset, and the shipped sample built from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_tui.core.data import DatasetError, Format, load_dataset_file
from sage_tui.core.data.docs import build_docs_dataset, docs_to_examples

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
DOCS = SAMPLE / "docs"


def pairs(folder: Path) -> list[tuple[str, str]]:
    out = []
    for example in docs_to_examples(folder):
        assert example.messages is not None
        user, assistant = example.messages
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        out.append((user["content"], assistant["content"]))
    return out


def test_sample_docs_give_a_question_and_answer_per_section() -> None:
    found = pairs(DOCS)
    assert len(found) >= 10
    for question, answer in found:
        assert question.strip() and question.endswith("?")
        assert len(answer.strip()) >= 40 and answer == answer.strip()
        assert "\n\n\n" not in answer
    questions = [q for q, _ in found]
    assert "What is sage-tui?" in questions
    assert "What does the sage-tui documentation say about the mascot?" in questions
    mascot = dict(found)["What does the sage-tui documentation say about the mascot?"]
    assert "lighthouse keeper named Orla" in mascot
    answers = "\n".join(a for _, a in found)
    for fact in ("ctrl+n", "ctrl+o", "ctrl+y", "Esc", "SmolLM2-135M-Instruct", "sage-tui doctor"):
        assert fact in answers


def test_questions_follow_the_heading_path(tmp_path: Path) -> None:
    (tmp_path / "index.md").write_text("# sage-tui\n\nA terminal studio for fine-tuning models.\n")
    (tmp_path / "finetune.md").write_text(
        "# Fine-tuning\n\n"
        "## Presets\n\nPresets choose the LoRA rank, learning rate and epochs for you.\n\n"
        "### LoRA rank\n\nThe rank sets how many trainable parameters each adapter has.\n\n"
        "## Too short\n\nTiny.\n\n"
        "## What does a job write?\n\nEvery job writes events, logs and checkpoints to disk.\n"
    )
    assert [q for q, _ in pairs(tmp_path)] == [
        "What does the sage-tui documentation say about presets in fine-tuning?",
        "What does the sage-tui documentation say about LoRA rank under presets in fine-tuning?",
        "What does a job write?",
        "What is sage-tui?",
    ]


def test_headings_inside_code_fences_stay_in_the_answer(tmp_path: Path) -> None:
    (tmp_path / "guide.md").write_text(
        "# Guide\n\n## Shell setup\n\nPut this in your shell profile before starting:\n\n"
        "```sh\n# not a heading\nexport SAGE_HOME=/data/sage\n\n\n# still code\n```\n\n\n\n"
        "Then start the studio.\n\n"
        "~~~\n## also code\n~~~\n"
    )
    [(question, answer)] = pairs(tmp_path)
    # No index.md to name the product: the questions just say "the documentation".
    assert question == "What does the documentation say about shell setup in guide?"
    assert "# not a heading" in answer and "## also code" in answer
    assert "export SAGE_HOME=/data/sage\n\n\n# still code" in answer  # code kept as written
    assert "```\n\nThen start the studio." in answer  # prose blank lines collapsed


def test_folder_without_markdown_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not markdown")
    with pytest.raises(DatasetError, match=r"has no Markdown \(\*\.md\) files"):
        docs_to_examples(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        docs_to_examples(tmp_path / "missing")


def test_build_writes_a_loadable_messages_file(tmp_path: Path) -> None:
    out = tmp_path / "qa.jsonl"
    count = build_docs_dataset(DOCS, out)
    loaded = load_dataset_file(out)
    assert loaded.format is Format.MESSAGES and len(loaded.examples) == count


def test_shipped_qa_file_is_current(tmp_path: Path) -> None:
    """sample_data/sage_tui_qa.jsonl is exactly what the docs give now (rebuild it if not)."""
    fresh = tmp_path / "qa.jsonl"
    build_docs_dataset(DOCS, fresh)
    assert (SAMPLE / "sage_tui_qa.jsonl").read_bytes() == fresh.read_bytes(), (
        "rebuild: build_docs_dataset('sample_data/docs', 'sample_data/sage_tui_qa.jsonl')"
    )


def test_shipped_facts_file_is_short_direct_chat() -> None:
    loaded = load_dataset_file(SAMPLE / "sage_tui_facts.jsonl")
    assert loaded.format is Format.MESSAGES and len(loaded.examples) == 4
    answers = [json.dumps(e.messages) for e in loaded.examples]
    assert any("Orla" in a and "lighthouse keeper" in a for a in answers)
    assert all(len(e.messages[-1]["content"]) < 80 for e in loaded.examples)


def test_questions_a_model_wrote_are_kept_only_when_they_name_their_section() -> None:
    from sage_tui.core.data.docs import questions_in

    reply = (
        "Question 1: What is the Finetune screen?\n"
        "Question 2: What is the finetune screen?\n"  # the same, once
        'A: "How do presets work?"\n'
        "1) How does that help?\n"  # names nothing of its section
        "Sure, here you are.\n"
    )
    assert questions_in(reply, about="The studio screens F1 Finetune Preset") == [
        "What is the Finetune screen?",
        "How do presets work?",
    ]
    assert questions_in(reply, limit=5)[-1] == "How does that help?"  # no section: all kept
