"""Dataset preview: examples as the model will see them, their token lengths, and which of
their tokens the model learns from.

The rows are tokenized as training tokenizes them (`loss_mask`: the base model's chat
template, the prompts masked unless training on prompts; the tokenizer is handed in by the
caller, so nothing heavy is imported here). The statistics and the length histogram show how
many rows `max_length` would cut, the counts how many tokens carry loss, which rows would be
dropped and which hold literal special tokens, and the first row's tokens come as pieces
flagged with whether they carry loss, for a highlighted view.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sage_tui.core.data.loading import Example, LoadedDataset
from sage_tui.core.data.loss_mask import IGNORED, MaskTally, TokenizedExample, tokenize_example
from sage_tui.core.data.special_tokens import SpecialTokenTally, special_tokens_of


@dataclass(frozen=True)
class Preview:
    """The first examples as the model will see them, and token lengths over all examples."""

    samples: list[str]
    """The first examples as rendered (chat template applied)."""
    lengths: list[int]
    """Each example's tokens, before truncation."""
    max_length: int
    trained_tokens: int = 0
    """Tokens that carry loss, over the examples kept (within max_length)."""
    masked_tokens: int = 0
    """Tokens that carry none (the prompts), over the examples kept."""
    dropped: int = 0
    """Examples training leaves out: no token carries loss within max_length."""
    special_tokens: dict[str, int] = field(default_factory=dict)
    """Literal special tokens found in the rows' text (before any stripping), with the number
    of rows holding each."""
    pieces: list[tuple[str, bool]] = field(default_factory=list)
    """The first example's tokens (after truncation): (decoded text, carries loss), runs of
    the same flag merged."""
    train_on_prompts: bool = False
    """Measured with every token trained."""

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
    def trained_share(self) -> float:
        """The part of the kept tokens that carries loss (0 when there are none)."""
        total = self.trained_tokens + self.masked_tokens
        return self.trained_tokens / total if total else 0.0

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


def _pieces(tokenizer: Any, tokenized: TokenizedExample) -> list[tuple[str, bool]]:
    """The example's tokens, decoded, with whether they carry loss; runs of tokens with the
    same flag are decoded together (so characters split across tokens come out whole)."""
    pieces: list[tuple[str, bool]] = []
    run: list[int] = []
    flag = False
    for token, label in zip(tokenized.input_ids, tokenized.labels, strict=True):
        trained = label != IGNORED
        if run and trained != flag:
            pieces.append((tokenizer.decode(run), flag))
            run = []
        run.append(token)
        flag = trained
    if run:
        pieces.append((tokenizer.decode(run), flag))
    return pieces


def preview(
    dataset: LoadedDataset | Sequence[Example],
    tokenizer: Any,
    max_length: int,
    rows: int = 5,
    *,
    train_on_prompts: bool = False,
    strip_special_tokens: bool = False,
) -> Preview:
    """Tokenize the examples as training will (`loss_mask.tokenize_example`) and measure them.

    `tokenizer` is a Hugging Face tokenizer. Lengths count each example's tokens before
    truncation (for chat rows the rendered text's, the template's own special tokens
    included and none added on top; text rows with their EOS). The first `rows` renderings
    are the samples and the first example's tokens the pieces. Literal special tokens are
    counted per token (`special_tokens`), and removed first with `strip_special_tokens`.
    DatasetError (naming the file and line) for a row the chat template refuses.
    """
    loaded = isinstance(dataset, LoadedDataset)
    examples = dataset.examples if loaded else list(dataset)
    source = str(dataset.path) if loaded else ""
    tokens = special_tokens_of(tokenizer)
    found = SpecialTokenTally(tokens)
    tally = MaskTally()
    samples: list[str] = []
    lengths: list[int] = []
    pieces: list[tuple[str, bool]] = []
    for example in examples:
        found.add(example)
        tokenized = tokenize_example(
            example,
            tokenizer,
            max_length=max_length,
            train_on_prompts=train_on_prompts,
            strip=tokens if strip_special_tokens else (),
            source=source,
        )
        tally.add(tokenized)
        lengths.append(tokenized.length)
        if len(samples) < rows:
            samples.append(tokenized.text)
        if not pieces:
            pieces = _pieces(tokenizer, tokenized)
    return Preview(
        samples=samples,
        lengths=lengths,
        max_length=max_length,
        trained_tokens=tally.trained,
        masked_tokens=tally.masked,
        dropped=tally.dropped,
        special_tokens=found.found(),
        pieces=pieces,
        train_on_prompts=train_on_prompts,
    )
