"""Splitting examples into training and evaluation parts, and saving them as JSON lines.

`held_out` decides the split by position, so millions of examples cost an array of flags
rather than a list of them; `write_jsonl` writes a file atomically.
"""

from __future__ import annotations

import json
import os
import random
from array import array
from collections.abc import Iterable, Sequence

from sage_tui.core.atomic import write_atomic
from sage_tui.core.data.errors import DatasetError
from sage_tui.core.data.formats import Example


def held_out(total: int, eval_fraction: float, seed: int = 0) -> bytearray:
    """Which of `total` examples are held out for evaluation: one flag (0 or 1) each.

    A deterministic random `eval_fraction` of them; above 0 it holds out at least one when
    there are two or more; the fraction must lie in [0, 0.5]. Positions are shuffled in an
    array of integers, so millions of examples cost megabytes, not a list of them.
    """
    if not 0 <= eval_fraction <= 0.5:
        raise DatasetError(f"eval fraction must be between 0 and 0.5, got {eval_fraction}")
    wanted = round(total * eval_fraction)
    if eval_fraction > 0 and total >= 2:
        wanted = max(1, wanted)
    wanted = min(wanted, max(total - 1, 0))
    flags = bytearray(total)
    if wanted == 0:
        return flags
    order = array("Q", range(total))
    random.Random(seed).shuffle(order)  # type: ignore[arg-type]  # any mutable sequence
    for position in order[:wanted]:
        flags[position] = 1
    return flags


def split(
    examples: Sequence[Example], eval_fraction: float, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, eval): the examples `held_out` chooses held out, both parts in their order."""
    flags = held_out(len(examples), eval_fraction, seed)
    train = [e for e, held in zip(examples, flags, strict=True) if not held]
    evaluation = [e for e, held in zip(examples, flags, strict=True) if held]
    return train, evaluation


def write_jsonl(examples: Iterable[Example], path: str | os.PathLike[str]) -> int:
    """Write examples as JSON lines (`messages` or `text` records), atomically; returns the count.

    The file appears complete or not at all: it is written next to `path` and renamed over it.
    """
    count = 0

    def lines() -> Iterable[str]:
        nonlocal count
        for example in examples:
            count += 1
            yield json.dumps(example.record(), ensure_ascii=False) + "\n"

    write_atomic(path, lines())
    return count
