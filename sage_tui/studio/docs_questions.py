"""Writing a docs folder as a dataset, the questions templated or written by the model.

A section's templated question ("What does the sage-tui documentation say about presets in
fine-tuning?") teaches one phrasing; users ask in many. With a model loaded, it is asked for up
to three questions the section answers, each becoming a row with the section as the reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sage_tui.core.data import Example, write_jsonl
from sage_tui.core.data.docs import DocSection, doc_sections, questions_in
from sage_tui.core.engines.base import Message, Sampling
from sage_tui.core.engines.reply import Reply
from sage_tui.core.private_files import private_dirs
from sage_tui.errors import describe_error

QUESTIONS_PER_SECTION = 3
SECTION_CHARS = 1500
"""Section text shown to the model: small models have small contexts."""
QUESTION_SAMPLING = Sampling(temperature=0.7, top_p=0.95, max_tokens=160)


@dataclass(frozen=True)
class DocsResult:
    """A dataset written from docs."""

    path: Path
    rows: int
    sections: int
    model_questions: int
    """Rows whose question the model wrote."""
    note: str
    """One line for the user: what was written, and any fallback."""


Ask = Callable[[Sequence[Message], Sampling], Awaitable[Reply]]
"""The engine desk's `reply`."""


def question_prompt(section: DocSection) -> list[Message]:
    """The chat asking the model for questions that `section` answers."""
    title = " > ".join(section.heading)
    body = section.body[:SECTION_CHARS]
    return [
        {
            "role": "user",
            "content": (
                f"Here is a section of documentation titled {title!r}:\n\n{body}\n\n"
                f"Write {QUESTIONS_PER_SECTION} different questions a user could ask that this"
                " section answers. Write one question per line and nothing else."
            ),
        }
    ]


async def _model_questions(ask: Ask, section: DocSection) -> list[str]:
    reply = await ask(question_prompt(section), QUESTION_SAMPLING)
    text = await reply.text()
    return questions_in(text, about=" ".join(section.heading), limit=QUESTIONS_PER_SECTION)


async def write_docs_dataset(
    folder: Path, target: Path, ask: Ask | None, progress: Callable[[str], None]
) -> DocsResult:
    """Write `folder`'s sections to `target` as JSON lines; returns a DocsResult.

    `ask` (the engine's reply) writes the questions; None: the templated ones. An engine
    failure falls back to templated questions for the sections left, said in the note.
    """
    sections = await asyncio.to_thread(doc_sections, folder)
    examples: list[Example] = []
    written = 0
    failure = ""
    for number, section in enumerate(sections, start=1):
        questions: list[str] = []
        if ask is not None and not failure:
            progress(f"questions for section {number} of {len(sections)}")
            try:
                questions = await _model_questions(ask, section)
            except Exception as err:  # any engine trouble: the templated questions stand in
                failure = describe_error(err)
        examples += [section.example(q) for q in questions] or [section.example()]
        written += len(questions)
    await asyncio.to_thread(private_dirs, target.parent)
    rows = await asyncio.to_thread(write_jsonl, examples, target)
    note = f"{rows} rows from {len(sections)} sections of {folder} written to {target}"
    if ask is not None:
        note += f"; the model wrote {written} questions"
        if failure:
            note += f" (the engine failed: {failure}; the rest are templated)"
        elif len(examples) > written:
            note += f", {len(examples) - written} sections kept the templated one"
    return DocsResult(target, rows, len(sections), written, note)
