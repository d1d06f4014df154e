"""A folder of Markdown docs turned into a question-and-answer dataset, locally.

SAGE Studio can fine-tune on "SAGE docs"; this is the same idea without a service: every
Markdown section with real text becomes one chat example whose question is built from the
section's heading path ("Fine-tuning > Presets" asks "What does the sage-tui documentation say
about presets in fine-tuning?") and whose answer is the section text, code fences kept.

The product named in the questions is the H1 of the folder's `index.md` or `README.md` (else
questions just say "the documentation"); each file's own H1 is its topic.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sage_tui.core.data.loading import DatasetError, Example, write_jsonl

MIN_BODY_CHARS = 40
_HEADING = re.compile(r"^ {0,3}(#{1,4})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_INDEX_NAMES = ("index.md", "readme.md")


@dataclass(frozen=True)
class _Section:
    path: tuple[str, ...]  # heading titles from the file's H1 (or topic) down
    body: str
    line: int  # line of the heading (1 for text before any heading)


def _clean(lines: list[str]) -> str:
    """Section text trimmed, with runs of blank lines outside code fences collapsed."""
    kept: list[str] = []
    fence: str | None = None
    for raw in lines:
        line = raw.rstrip()
        opener = _FENCE.match(line)
        if fence is None and opener:
            fence = opener.group(1)
        elif fence is not None and opener and line.strip().startswith(fence[0] * len(fence)):
            fence = None
        elif fence is None and not line and kept and not kept[-1]:
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def _sections(text: str, topic: str) -> list[_Section]:
    """Sections of one Markdown file; headings inside code fences are text, not headings."""
    sections: list[_Section] = []
    stack: list[tuple[int, str]] = []  # (level, title) of the headings above
    body: list[str] = []
    start = 1
    fence: str | None = None

    def close() -> None:
        path = tuple(title for _, title in stack)
        if not stack or stack[0][0] != 1:
            path = (topic, *path)  # no H1 above: the file's name stands in for it
        sections.append(_Section(path, _clean(body), start))

    for number, line in enumerate(text.splitlines(), start=1):
        opener = _FENCE.match(line)
        if opener:
            marker = opener.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
        heading = None if fence is not None or opener else _HEADING.match(line)
        if heading is None:
            body.append(line)
            continue
        close()
        level, title = len(heading.group(1)), heading.group(2).strip()
        stack = [(lv, t) for lv, t in stack if lv < level]
        stack.append((level, title))
        body, start = [], number
    close()
    return sections


def _h1(text: str) -> str | None:
    for section in _sections(text, ""):
        if section.path and section.path[0]:
            return section.path[0]
    return None


def _phrase(title: str) -> str:
    """A heading as it reads mid-sentence: "Presets" -> "presets", "LoRA rank" stays."""
    # Markdown decoration would read oddly inside a question.
    title = _LINK.sub(r"\1", title).replace("`", "").rstrip(":.").strip()
    first = title.split(" ", 1)[0]
    # Lower-case an ordinary capitalised word only; names like SmolLM2 or F1 keep their case.
    if first[:1].isupper() and first[1:].replace("-", "").isalpha() and first[1:].islower():
        return title[:1].lower() + title[1:]
    return title


def _question(path: tuple[str, ...], product: str) -> str:
    """A natural question for a heading path, e.g. "... about presets in fine-tuning?"."""
    leaf = path[-1]
    if leaf.endswith("?"):
        return leaf  # the heading already asks it
    parents = list(path[:-1])
    if product and parents and parents[0].casefold() == product.casefold():
        parents = parents[1:]  # "in sage-tui" adds nothing to a question about sage-tui
    if product and not parents and leaf.casefold() == product.casefold():
        return f"What is {product}?"
    about = _phrase(leaf)
    if len(parents) > 1:
        about += f" under {_phrase(parents[-1])}"
    if parents:
        about += f" in {_phrase(parents[0])}"
    docs = f"the {product} documentation" if product else "the documentation"
    return f"What does {docs} say about {about}?"


def _markdown_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"docs folder {folder} does not exist")
    # Sorted by relative path so the dataset is the same on every machine.
    files = sorted(
        (p for p in folder.rglob("*.md") if p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise DatasetError(f"docs folder {folder} has no Markdown (*.md) files")
    return files


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        data = path.read_bytes()
        line = data.count(b"\n", 0, err.start) + 1
        raise DatasetError(f"{path}: line {line} is not valid UTF-8") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err.strerror or err}") from None


def _product(folder: Path, files: list[Path]) -> str:
    """The H1 of the folder's index.md or README.md; "" (plain "the documentation") if none."""
    for path in files:
        if path.parent == folder and path.name.lower() in _INDEX_NAMES:
            title = _h1(_read(path))
            if title:
                return title
    return ""


@dataclass(frozen=True)
class DocSection:
    """One Markdown section with enough text to answer questions about."""

    file: str  # path relative to the docs folder
    line: int  # line of its heading in that file
    heading: tuple[str, ...]  # the heading titles from the file's topic down
    body: str
    question: str  # the templated question it answers

    def example(self, question: str | None = None) -> Example:
        """The section as a Q&A example: `question` (default the templated one), the text."""
        messages = [
            {"role": "user", "content": question or self.question},
            {"role": "assistant", "content": self.body},
        ]
        return Example(messages=messages, line=self.line)


def doc_sections(folder: str | os.PathLike[str], *, product: str | None = None) -> list[DocSection]:
    """Every Markdown section with at least 40 characters of text, files in path order.

    `product` names the documented thing in the questions; by default the H1 of the folder's
    index.md or README.md. Raises DatasetError for a folder without Markdown files.
    """
    root = Path(folder)
    files = _markdown_files(root)
    name = product or _product(root, files)
    sections: list[DocSection] = []
    for path in files:
        topic = path.stem.replace("-", " ").replace("_", " ")
        if path.name.lower() in _INDEX_NAMES and name:
            topic = name
        relative = path.relative_to(root).as_posix()
        for section in _sections(_read(path), topic):
            if len(section.body) < MIN_BODY_CHARS:
                continue
            question = _question(section.path, name)
            sections.append(
                DocSection(relative, section.line, section.path, section.body, question)
            )
    return sections


def docs_to_examples(
    folder: str | os.PathLike[str], *, product: str | None = None
) -> list[Example]:
    """One Q&A example per section (`doc_sections`), with its templated question."""
    return [section.example() for section in doc_sections(folder, product=product)]


_LISTED = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|(?:Q|Question)\s*\d*\s*[:.)]|[A-Z][:)])?\s*")
_WORD = re.compile(r"[a-z0-9][a-z0-9_+-]{3,}")
_COMMON = frozenset(
    [
        "what",
        "does",
        "about",
        "with",
        "from",
        "that",
        "this",
        "your",
        "have",
        "into",
        "when",
        "which",
        "there",
        "their",
        "should",
        "would",
        "could",
        "they",
        "them",
        "then",
        "than",
        "will",
        "documentation",
        "under",
    ]
)


def topic_words(text: str) -> set[str]:
    """The words of four or more letters that say what `text` is about (common ones out), a
    plural's final s dropped ("presets" and "preset" are one word)."""
    words = (word for word in _WORD.findall(text.lower()) if word not in _COMMON)
    return {word[:-1] if len(word) > 4 and word.endswith("s") else word for word in words}


def questions_in(reply: str, *, about: str = "", limit: int = 5) -> list[str]:
    """The questions a model wrote, one a line ("1. How do I ...?"): list marks and quotes
    removed, only lines ending in a question mark, each once, at most `limit`. With `about`
    (a section's headings), only questions naming one of its words: a small model also writes
    "How does that help?", which teaches nothing."""
    topic = topic_words(about)
    found: list[str] = []
    for line in reply.splitlines():
        question = _LISTED.sub("", line, count=1).strip().strip('"').strip()
        if not (8 <= len(question) <= 300 and question.endswith("?")):
            continue
        if topic and not topic_words(question) & topic:
            continue
        if question.casefold() not in {seen.casefold() for seen in found}:
            found.append(question)
    return found[:limit]


def build_docs_dataset(folder: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> int:
    """Write the docs folder's Q&A examples to `out_path` as JSON lines; returns the row count."""
    return write_jsonl(docs_to_examples(folder), out_path)
