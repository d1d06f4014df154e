"""What a dataset check shows a user: the verdict, problems, token statistics, a sample row.

The token preview needs the base model's tokenizer (transformers, imported here only when
asked), so it is separate from the check itself and may fail alone.
"""

from __future__ import annotations

from typing import Any

from sage_tui.studio.jobs import DatasetCheck

SAMPLE_CHARS = 400


def token_preview(check: DatasetCheck, base_path: str, max_length: int) -> Any:
    """Token statistics, a length histogram and rendered rows, through the base model's
    tokenizer and chat template. Blocks (loads the tokenizer)."""
    from transformers import AutoTokenizer

    from sage_tui.core.data.preview import preview

    return preview(check.loaded, AutoTokenizer.from_pretrained(base_path), max_length)


def _clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()} ... ({len(text) - limit} more characters)"


def describe_check(check: DatasetCheck, preview: Any | None, preview_error: str | None) -> str:
    """What the Check found: the verdict, problems, warnings, then the token statistics."""
    loaded = check.loaded
    lines = [f"{loaded.usable} rows of {loaded.total_rows} usable, format {loaded.format.value}"]
    lines.append(check.verdict)
    lines += [f"problem: {problem}" for problem in loaded.problems[:5]]
    lines += [f"warning: {warning}" for warning in check.warnings()]
    if preview is not None:
        # A check keeps only the first rows of a big file (CHECK_KEEP): say so.
        measured = f" (first {preview.count} rows)" if preview.count < loaded.usable else ""
        lines.append(
            f"tokens{measured}: min {preview.min_tokens}  median {preview.median_tokens:.0f}"
            f"  max {preview.max_tokens}  ({preview.truncated} over max length"
            f" {preview.max_length})"
        )
        lines.append(preview.histogram_text(bins=6, width=24))
        if preview.samples:
            lines.append("first row as the model sees it:")
            lines.append(_clip(preview.samples[0], SAMPLE_CHARS))
    elif preview_error:
        lines.append(f"token preview unavailable: {preview_error}")
    return "\n".join(lines)
