"""Peak memory of reading a big dataset, for tests/test_dataset_limits.py and
bench/dataset_memory.py.

`write_alpaca_jsonl` builds a JSON-lines file of real Alpaca rows (the shared demo set,
repeated) up to a size; `measure` runs one way of reading it in a fresh interpreter and
reports that process's peak resident memory (`ru_maxrss`) before and after the reading, so
the figures are not blurred by whatever ran before in the caller.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ALPACA = REPO.parent / "shared" / "datasets" / "alpaca_en_demo.json"

# Each child imports what it needs, records its peak so far, reads the file, records again.
_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    variant, path, work, model = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    if variant == "baseline":
        pass
    elif variant == "check":
        from sage_tui.studio.datasets import check_dataset
    else:
        from sage_tui.core.training.job_folder import JobFolder
        from sage_tui.core.training.spec import JobSpec
        from sage_tui.core.training import training_rows
        spec = JobSpec(task_id="m", base_model="m", base_path=str(work), dataset=str(path),
                       dataset_format="alpaca", eval_fraction=0.1)
        folder = JobFolder(work / "job")
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(model)
    if variant == "arrow":  # the rows written beforehand: only the datasets are measured
        import datasets
        training_rows.write_training_rows(spec, folder, tokenizer)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if variant == "baseline":  # the old way: the whole file, then every row as objects
        text = path.read_bytes().decode("utf-8-sig")
        rows = [json.loads(line) for line in text.split("\\n") if line.strip()]
        count = len(rows)
    elif variant == "check":
        count = check_dataset(path).loaded.total_rows
    elif variant == "train_rows":
        count = sum(training_rows.write_training_rows(spec, folder, tokenizer))
    else:
        count = sum(len(part) for part in training_rows.training_datasets(folder) if part)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": peak, "seconds": seconds, "rows": count}))
    """
)
VARIANTS = ("baseline", "check", "train_rows", "arrow")
"""baseline: read_bytes + json.loads of every line into a list (how files were read before);
check: the Check button's reading of the rows; train_rows: the runner's data step (tokenized);
arrow: the `datasets` the trainer gets, made from the rows the data step wrote."""


@dataclass(frozen=True)
class Measure:
    """One reading of the file in a fresh interpreter."""

    variant: str
    before_kib: int
    peak_kib: int
    seconds: float
    rows: int

    @property
    def growth_mib(self) -> float:
        """How much the reading raised the process's peak resident memory, in MiB."""
        return (self.peak_kib - self.before_kib) / 1024


def write_alpaca_jsonl(path: Path, size: int) -> int:
    """Write Alpaca rows as JSON lines to `path` until it holds at least `size` bytes;
    returns the number of rows."""
    rows = [json.dumps(row, ensure_ascii=False) + "\n" for row in json.loads(ALPACA.read_text())]
    block = "".join(rows).encode()
    repeats = -(-size // len(block))
    with path.open("wb") as out:
        for _ in range(repeats):
            out.write(block)
    return repeats * len(rows)


def measure(
    variant: str, path: Path, work: Path, timeout: float = 1800, model: Path | None = None
) -> Measure:
    """Read `path` the `variant` way in a fresh interpreter (scratch files under `work`); the
    runner's variants tokenize with the tokenizer of the model folder `model`."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, variant, str(path), str(work), str(model or "")],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed: {done.stderr.strip()[-2000:]}")
    return Measure(variant, **json.loads(done.stdout.strip().splitlines()[-1]))
