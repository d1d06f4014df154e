"""Training throughput of the sage-tui runner versus a plain TRL script, same settings.

Both train LoRA (all linear layers, r 16) on the built-in model with the same rows, seed,
batch size, max length and number of steps. The runner is the real child process
(`python -m sage_tui.core.training.runner`); the baseline is the shortest TRL script that does
the same (`SFTTrainer` + `LoraConfig`), run in its own process too. Throughput is compared on
the training loop alone (`train_runtime` as the trainer reports it), so start-up and model
loading do not count for either. Target: the runner at 95 % or more of plain TRL.

    .venv/bin/python bench/training_throughput.py [--steps 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "sample_data" / "sage_tui_qa.jsonl"
BASELINE = r"""
import json, sys
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer
import torch
base, data, out, steps, batch, length = sys.argv[1:7]
rows = [json.loads(line) for line in open(data) if line.strip()]
cuda = torch.cuda.is_available()
trainer = SFTTrainer(
    model=base,
    args=SFTConfig(output_dir=out, per_device_train_batch_size=int(batch), learning_rate=2e-4,
                   max_steps=int(steps), max_length=int(length), logging_steps=1,
                   save_strategy="no", seed=42, report_to=[], use_cpu=not cuda,
                   gradient_checkpointing=cuda, lr_scheduler_type="constant"),
    train_dataset=Dataset.from_list(rows),
    processing_class=AutoTokenizer.from_pretrained(base),
    peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                           bias="none", task_type="CAUSAL_LM"),
)
print(json.dumps(trainer.train().metrics))
"""


def tokens_per_row(base: Path, length: int) -> float:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    sizes = [min(length, len(tokenizer(t, add_special_tokens=False).input_ids)) for t in texts]
    return statistics.mean(sizes)


def run_runner(base: Path, steps: int, batch: int, length: int) -> dict:
    job = Path(tempfile.mkdtemp(prefix="sage-bench-job-"))
    spec = {
        "task_id": "bench",
        "base_model": "bench",
        "base_path": str(base),
        "dataset": str(DATA),
        "max_steps": steps,
        "batch_size": batch,
        "max_length": length,
        "save_steps": 10_000,
        "learning_rate": 2e-4,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
    }
    (job / "spec.json").write_text(json.dumps(spec))
    with open(job / "train.log", "w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "sage_tui.core.training.runner", str(job)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if code != 0:
        raise RuntimeError(f"runner failed: see {job / 'train.log'}")
    return json.loads((job / "metrics.json").read_text())


def run_baseline(base: Path, steps: int, batch: int, length: int) -> dict:
    out = tempfile.mkdtemp(prefix="sage-bench-trl-")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            BASELINE,
            str(base),
            str(DATA),
            out,
            str(steps),
            str(batch),
            str(length),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.conftest import BUILTIN, Paths, is_provisioned, resolve_home

    installed = Paths(resolve_home()).model_dir(BUILTIN)
    base = installed if is_provisioned(installed) else REPO / ".cache" / "models" / BUILTIN
    per_row = tokens_per_row(base, args.max_length)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python"
        f" {platform.python_version()}; {args.steps} steps x batch {args.batch_size},"
        f" max length {args.max_length}, {per_row:.0f} tokens per row on average"
    )
    results: dict[str, list[float]] = {"plain TRL script": [], "sage-tui runner": []}
    for _ in range(args.rounds):  # alternate, so drift on the machine hits both
        for name, run in (("plain TRL script", run_baseline), ("sage-tui runner", run_runner)):
            metrics = run(base, args.steps, args.batch_size, args.max_length)
            results[name].append(metrics["train_samples_per_second"] * per_row)
    print(f"{'path':<20} {'tokens/s (median)':>18}   runs")
    for name, speeds in results.items():
        runs = ", ".join(f"{s:.0f}" for s in speeds)
        print(f"{name:<20} {statistics.median(speeds):18.0f}   {runs}")
    ratio = statistics.median(results["sage-tui runner"]) / statistics.median(
        results["plain TRL script"]
    )
    print(f"runner / plain TRL: {100 * ratio:.1f} %")


if __name__ == "__main__":
    main()
