"""What one round of checkpoint probes costs next to a training step, in the same run.

Trains LoRA (all linear layers, r 16) on the built-in model with TRL as the runner does on a
CPU host (the cpu preset's batch size and max length), timing every optimiser step; at
`--probe-at` steps it runs a probe round (`core.training.probes.Prober`, as the runner's
`on_save` does) with the model in training mode, and reports the median step, the median round
and how many steps a round costs.

    .venv/bin/python bench/probes.py [--steps 12] [--prompts 2] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO / "sample_data" / "sage_tui_qa.jsonl"
PROMPTS = (
    "Who is the sage-tui mascot?",
    "What port does the sage-tui server listen on?",
    "How do I resume a job?",
    "What is a LoRA adapter?",
    "Name the screens of sage-tui.",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--probe-at", default="4,8,12", help="steps after which a round runs")
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from sage_tui.core.models.builtin import BUILTIN_MODELS, is_provisioned, provision
    from sage_tui.core.training.events import EventWriter
    from sage_tui.core.training.probes import Prober
    from sage_tui.core.training.spec import PRESETS
    from sage_tui.paths import Paths, resolve_home

    name = "smollm2-135m-instruct"
    base = Paths(resolve_home()).model_dir(name)
    if not is_provisioned(base):
        base = provision(BUILTIN_MODELS[name], REPO / ".cache" / "models" / name)
    preset = PRESETS["cpu"].values
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(base)
    probe_at = {int(step) for step in args.probe_at.split(",")}
    steps: list[float] = []
    rounds: list[float] = []

    with tempfile.TemporaryDirectory() as folder:
        events = EventWriter(Path(folder))
        prober = Prober(PROMPTS[: args.prompts], args.tokens, tokenizer, events)

        class Timer(TrainerCallback):
            def on_step_begin(self, args_, state, control, **kwargs):
                self.began = time.perf_counter()

            def on_step_end(self, args_, state, control, model=None, **kwargs):
                steps.append(time.perf_counter() - self.began)
                if state.global_step in probe_at:
                    began = time.perf_counter()
                    found = prober.run(model, state.global_step, f"checkpoint-{state.global_step}")
                    rounds.append(time.perf_counter() - began)
                    assert found is not None and found.error is None, found
                    assert model.training

        cuda = torch.cuda.is_available()
        trainer = SFTTrainer(
            model=str(base),
            args=SFTConfig(
                output_dir=folder,
                per_device_train_batch_size=preset["batch_size"],
                max_length=preset["max_length"],
                learning_rate=2e-4,
                max_steps=args.steps,
                logging_steps=1,
                save_strategy="no",
                seed=42,
                report_to=[],
                use_cpu=not cuda,
                gradient_checkpointing=cuda,
                lr_scheduler_type="constant",
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=16, lora_alpha=32, target_modules="all-linear", bias="none", task_type="CAUSAL_LM"
            ),
            callbacks=[Timer()],
        )
        trainer.train()
        events.close()

    step = statistics.median(steps[1:])  # the first step warms up
    round_ = statistics.median(rounds)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(
        f"training step (batch {preset['batch_size']}, max length {preset['max_length']}):"
        f" median {step:.2f} s over {len(steps) - 1} steps"
    )
    print(
        f"probe round ({args.prompts} prompts x {args.tokens} tokens): median {round_:.2f} s"
        f" over {len(rounds)} rounds ({', '.join(f'{r:.2f}' for r in rounds)})"
    )
    print(f"one round costs {round_ / step:.1f} training steps")


if __name__ == "__main__":
    main()
