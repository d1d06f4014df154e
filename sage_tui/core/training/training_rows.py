"""The job's dataset as the trainer reads it: rows tokenized once into the job folder.

The runner never holds the dataset in memory: the file is streamed twice (checked as a dataset
check does it, then converted, tokenized with the prompts masked and split by position), the
rows go to the job folder's `train.jsonl` and `eval.jsonl` as token ids and labels, and
`datasets` turns those into memory-mapped Arrow files under `dataset_cache/`. Nothing heavy
is imported at module level: the tokenizer is handed in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, TextIO

from sage_tui.core.atomic import write_atomic_with
from sage_tui.core.data import DatasetError, Example, held_out, iter_examples, load_dataset_file
from sage_tui.core.data.loss_mask import MaskTally, tokenize_example
from sage_tui.core.data.special_tokens import special_tokens_of
from sage_tui.core.training.job_folder import JobFolder
from sage_tui.core.training.spec import JobSpec


def write_training_rows(
    spec: JobSpec,
    folder: JobFolder,
    tokenizer: Any,
    *,
    tally: MaskTally | None = None,
) -> tuple[int, int]:
    """Write the job's training and evaluation rows for TRL to `folder`'s `train.jsonl` and
    `eval.jsonl`, each atomically; returns how many went to each.

    Every example is tokenized with the base model's `tokenizer` as
    `loss_mask.tokenize_example` does it, with the spec's placeholders, masking, stripping and
    max length: the rows are `{"input_ids": [...], "labels": [...]}`, which TRL trains on as
    they are, and a row with no token carrying loss is left out. `tally`, when given, receives
    the figures (tokens trained and masked, rows cut and dropped).

    DatasetError as a dataset check gives it, for a row the chat template cannot render or
    mask (naming its line), when no training row is left, or when the file changed between
    the passes.
    """
    loaded = load_dataset_file(
        Path(spec.dataset),
        fmt=spec.dataset_format,
        skip_invalid=spec.skip_invalid,
        placeholders=spec.placeholders,
        keep=0,
        columns=spec.columns or None,
    )
    flags = held_out(loaded.usable, spec.eval_fraction, seed=spec.seed)
    examples = iter_examples(
        loaded.path, loaded.format, placeholders=spec.placeholders, columns=spec.columns or None
    )
    strip = special_tokens_of(tokenizer) if spec.strip_special_tokens else ()
    counts = [0, 0]
    seen = 0

    def record(example: Example) -> dict[str, Any] | None:
        tokenized = tokenize_example(
            example,
            tokenizer,
            max_length=spec.max_length,
            train_on_prompts=spec.train_on_prompts,
            strip=strip,
            source=spec.dataset,
        )
        if tally is not None:
            tally.add(tokenized)
        return None if tokenized.dropped else tokenized.record()

    def write_train(train_rows: TextIO) -> None:
        def write_eval(eval_rows: TextIO) -> None:
            nonlocal seen
            handles = (train_rows, eval_rows)
            # Flags first: zip stops on them without taking one more example.
            for held, example in zip(flags, examples, strict=False):
                seen += 1
                row = record(example)
                if row is None:
                    continue
                handles[held].write(json.dumps(row, ensure_ascii=False) + "\n")
                counts[held] += 1
            if seen != len(flags) or next(examples, None) is not None:
                raise DatasetError(
                    f"{spec.dataset} changed while the job read it; start the job again"
                )
            if seen and not counts[0]:
                raise DatasetError(
                    f"{spec.dataset}: no training row has a token that carries loss within the"
                    f" max length ({spec.max_length} tokens); raise the max length"
                )

        write_atomic_with(folder.eval_rows, write_eval)

    write_atomic_with(folder.train_rows, write_train)
    shutil.rmtree(folder.dataset_cache, ignore_errors=True)  # made from the previous rows
    return counts[0], counts[1]


def training_datasets(folder: JobFolder) -> tuple[Any, Any]:
    """The Hugging Face datasets (train, and eval or None) over the rows
    `write_training_rows` wrote: memory-mapped Arrow files under `folder`."""
    from datasets import Dataset

    cache = str(folder.dataset_cache)
    train = Dataset.from_json(str(folder.train_rows), cache_dir=cache)
    if not folder.eval_rows.stat().st_size:
        return train, None
    return train, Dataset.from_json(str(folder.eval_rows), cache_dir=cache)
