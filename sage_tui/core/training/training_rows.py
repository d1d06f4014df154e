"""The job's dataset as the trainer reads it: rows converted once into the job folder.

The runner never holds the dataset in memory: the file is streamed twice (checked as a dataset
check does it, then converted and split by position), the rows go to the job folder's
`train.jsonl` and `eval.jsonl`, and `datasets` turns those into memory-mapped Arrow files
under `dataset_cache/`. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, TextIO

from sage_tui.core.atomic import write_atomic_with
from sage_tui.core.data import DatasetError, held_out, iter_examples, load_dataset_file
from sage_tui.core.training.job_folder import JobFolder
from sage_tui.core.training.spec import JobSpec


def write_training_rows(spec: JobSpec, folder: JobFolder) -> tuple[int, int]:
    """Write the job's training and evaluation rows for TRL (`{"messages": [...]}` or
    `{"text": ...}`, the spec's placeholder values filled in) to `folder`'s `train.jsonl`
    and `eval.jsonl`, each atomically; returns how many went to each.

    DatasetError as a dataset check gives it, or when the file changed between the passes.
    """
    loaded = load_dataset_file(
        Path(spec.dataset),
        fmt=spec.dataset_format,
        skip_invalid=spec.skip_invalid,
        placeholders=spec.placeholders,
        keep=0,
    )
    flags = held_out(loaded.usable, spec.eval_fraction, seed=spec.seed)
    examples = iter_examples(loaded.path, loaded.format, placeholders=spec.placeholders)
    counts = [0, 0]

    def write_train(train_rows: TextIO) -> None:
        def write_eval(eval_rows: TextIO) -> None:
            handles = (train_rows, eval_rows)
            # Flags first: zip stops on them without taking one more example.
            for held, example in zip(flags, examples, strict=False):
                handles[held].write(json.dumps(example.record(), ensure_ascii=False) + "\n")
                counts[held] += 1
            if sum(counts) != len(flags) or next(examples, None) is not None:
                raise DatasetError(
                    f"{spec.dataset} changed while the job read it; start the job again"
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
