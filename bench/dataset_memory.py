"""Peak memory and time of reading a big dataset: the streaming reader against the old way.

Builds a JSON-lines file of real Alpaca rows (the shared demo set, repeated) of about
`--size-mb` in a temporary folder, then reads it in a fresh interpreter each way:

1. baseline: the file read whole and every line parsed into a list (how files were read
   before the reader streamed);
2. check: `studio.datasets.check_dataset`, what the Check button and `finetune --check` run;
3. train_rows: the runner's data step (`write_training_rows`: checked, converted, split and
   written to the job folder's train/eval JSON lines);
4. arrow: the Hugging Face datasets the trainer gets (`training_datasets`: memory-mapped Arrow
   files made from those rows; writing the rows is not counted).

Peak resident memory is the child's `ru_maxrss`; "growth" is how much the reading raised it
above the interpreter with its imports.

    .venv/bin/python bench/dataset_memory.py [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.dataset_memory import VARIANTS, measure, write_alpaca_jsonl  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="dataset size (MiB)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {VARIANTS}"
    )
    args = parser.parse_args()
    from sage_tui.core.models.builtin import is_provisioned
    from sage_tui.paths import Paths, resolve_home

    model = Paths(resolve_home()).model_dir("smollm2-135m-instruct")
    if not is_provisioned(model):
        parser.error(f"the built-in model is not provisioned ({model}): run make setup first")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {sys.version}")
    with tempfile.TemporaryDirectory(prefix="dataset-memory-") as scratch:
        work = Path(scratch)
        path = work / "alpaca_big.jsonl"
        rows = write_alpaca_jsonl(path, args.size_mb * 1024 * 1024)
        size = path.stat().st_size / 1024 / 1024
        print(f"dataset: {rows:,} Alpaca rows, {size:,.0f} MiB of JSON lines", flush=True)
        print(f"{'variant':<12} {'peak MiB':>9} {'growth MiB':>11} {'seconds':>8} {'rows':>10}")
        for variant in args.variants.split(","):
            found = measure(variant.strip(), path, work, model=model)
            print(
                f"{found.variant:<12} {found.peak_kib / 1024:9.0f} {found.growth_mib:11.0f}"
                f" {found.seconds:8.1f} {found.rows:10,}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
