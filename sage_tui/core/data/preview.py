"""Dataset preview: examples as the model will see them, and their token lengths.

The rows go through the base model's chat template (the tokenizer is handed in by the caller,
so nothing heavy is imported here); the statistics and the length histogram show how many
rows `max_length` would cut.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sage_tui.core.data.loading import DatasetError, Example, LoadedDataset


@dataclass(frozen=True)
class Preview:
    """The first examples as the model will see them, and token lengths over all examples."""

    samples: list[str]
    lengths: list[int]
    max_length: int

    @property
    def count(self) -> int:
        """Number of examples measured."""
        return len(self.lengths)

    @property
    def min_tokens(self) -> int:
        """Shortest example, in tokens."""
        return min(self.lengths, default=0)

    @property
    def max_tokens(self) -> int:
        """Longest example, in tokens."""
        return max(self.lengths, default=0)

    @property
    def median_tokens(self) -> float:
        """Median example length, in tokens."""
        return float(statistics.median(self.lengths)) if self.lengths else 0.0

    @property
    def mean_tokens(self) -> float:
        """Mean example length, in tokens."""
        return statistics.fmean(self.lengths) if self.lengths else 0.0

    @property
    def truncated(self) -> int:
        """Examples longer than max_length: training cuts them."""
        return sum(1 for n in self.lengths if n > self.max_length)

    def histogram(self, bins: int = 10) -> list[tuple[int, int, int]]:
        """Token lengths in at most `bins` equal buckets: (low, high, count), bounds inclusive."""
        if not self.lengths:
            return []
        low, high = self.min_tokens, self.max_tokens
        width = max(1, math.ceil((high - low + 1) / max(1, bins)))
        buckets = math.ceil((high - low + 1) / width)
        counts = [0] * buckets
        for n in self.lengths:
            counts[(n - low) // width] += 1
        return [
            (low + i * width, min(high, low + (i + 1) * width - 1), c) for i, c in enumerate(counts)
        ]

    def histogram_text(self, bins: int = 10, width: int = 40) -> str:
        """The histogram as plain-text bars, one bucket a line."""
        return render_histogram(self.histogram(bins), width=width)


def render_histogram(
    buckets: Sequence[tuple[int, int, int]], *, width: int = 40, bar: str = "█"
) -> str:
    """Plain-text bars for (low, high, count) buckets, scaled so the largest is `width` long."""
    if not buckets:
        return ""
    digits = len(str(max(high for _, high, _ in buckets)))
    peak = max(count for _, _, count in buckets) or 1
    lines = []
    for low, high, count in buckets:
        length = round(count / peak * width)
        if count and not length:
            length = 1  # a non-empty bucket stays visible
        drawn = f"{bar * length} " if length else ""
        lines.append(f"{low:>{digits}}-{high:<{digits}} {drawn}{count}")
    return "\n".join(lines)


def _render(examples: Sequence[Example], tokenizer: Any) -> list[str]:
    chats = [e.messages for e in examples if e.messages is not None]
    rendered: list[str] = []
    if chats:
        if not getattr(tokenizer, "chat_template", None):
            raise DatasetError(
                "the model's tokenizer has no chat template; chat datasets need an instruct model"
            )
        try:
            rendered = list(tokenizer.apply_chat_template(chats, tokenize=False))
        except Exception:
            # Find the one conversation the template refuses, to name its line.
            for example in examples:
                if example.messages is None:
                    continue
                try:
                    tokenizer.apply_chat_template(example.messages, tokenize=False)
                except Exception as err:
                    reason = " ".join(str(err).split()) or type(err).__name__
                    raise DatasetError(
                        f"line {example.line}: the model's chat template refuses this"
                        f" conversation ({reason})"
                    ) from None
            raise
    texts = iter(rendered)
    return [(e.text or "") if e.messages is None else next(texts) for e in examples]


def preview(
    dataset: LoadedDataset | Sequence[Example], tokenizer: Any, max_length: int, rows: int = 5
) -> Preview:
    """Render the first `rows` examples with the model's chat template and measure them all.

    `tokenizer` is a Hugging Face tokenizer. Lengths count the rendered text's tokens (the
    template's own special tokens included, none added on top), in one batched call.
    """
    examples = dataset.examples if isinstance(dataset, LoadedDataset) else list(dataset)
    texts = _render(examples, tokenizer)
    lengths = (
        [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        if texts
        else []
    )
    return Preview(samples=texts[:rows], lengths=lengths, max_length=max_length)
