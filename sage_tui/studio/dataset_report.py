"""What a dataset check shows a user, as plain lines: the verdict, problems, warnings, token
statistics, the share of tokens that carry loss, the first row as the model sees it, and the
reason on the last line (the CLI's `data check` and the Finetune form's Check print the same).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sage_tui.core.data.preview import Preview
    from sage_tui.studio.datasets import DataReport

SAMPLE_CHARS = 400


def _clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()} ... ({len(text) - limit} more characters)"


def token_lines(preview: Preview, usable: int) -> list[str]:
    """Token lengths against the max length, what is cut or dropped, the loss share."""
    # A check keeps only the first rows of a big file (CHECK_KEEP): say so.
    measured = f" (first {preview.count} rows)" if preview.count < usable else ""
    lines = [
        f"tokens{measured}: min {preview.min_tokens}  median {preview.median_tokens:.0f}"
        f"  max {preview.max_tokens}  (max length {preview.max_length})",
        preview.histogram_text(bins=6, width=24),
    ]
    if preview.truncated:
        lines.append(
            f"warning: {preview.truncated} rows are longer than the max length"
            f" ({preview.max_length} tokens): training cuts them at the end"
        )
    if preview.dropped:
        lines.append(
            f"warning: {preview.dropped} rows are dropped: their replies start after the max"
            " length, so nothing in them would carry loss"
        )
    for token, rows in sorted(preview.special_tokens.items(), key=lambda item: -item[1]):
        lines.append(
            f"warning: {rows} rows hold the literal special token {token} in their text"
            " (the model reads it as a control token); strip special tokens to remove it"
        )
    total = preview.trained_tokens + preview.masked_tokens
    if total:
        share = 100 * preview.trained_tokens / total
        lines.append(
            f"loss: {preview.trained_tokens:,} of {total:,} tokens carry loss ({share:.0f}%),"
            f" {preview.masked_tokens:,} are masked"
        )
    return lines


def describe_report(report: DataReport) -> str:
    """The report's lines, joined; the last one says whether the file can train."""
    lines: list[str] = []
    check = report.check
    if check is not None:
        loaded = check.loaded
        lines.append(
            f"{loaded.usable} rows of {loaded.total_rows} usable, format {loaded.format.value}"
        )
        lines.append(check.verdict)
        lines += [f"problem: {problem}" for problem in loaded.problems[:5]]
        lines += [f"warning: {warning}" for warning in check.warnings(report.how_to_fill)]
        if report.preview is not None:
            lines += token_lines(report.preview, loaded.usable)
            # Front ends show the first row's tokens marked (`report.pieces`) where they can.
            if report.preview.samples and not report.preview.pieces:
                lines.append("first row as the model sees it:")
                lines.append(_clip(report.preview.samples[0], SAMPLE_CHARS))
        elif report.preview_error:
            lines.append(f"token preview unavailable: {report.preview_error}")
    lines.append(report.reason)
    return "\n".join(lines)
