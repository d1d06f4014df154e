"""What masking the prompts costs the runner's data step: rows tokenized a second, through the
built-in model's real tokenizer and chat template, in the same run:

- baseline: `apply_chat_template(messages, tokenize=True)` once a row, what TRL's SFTTrainer
  did with `messages` rows before (every token trained);
- masked: `loss_mask.tokenize_example`, loss on the assistant replies only (the default);
- prompts: `tokenize_example(train_on_prompts=True)`, every token trained.

Datasets: the shared Alpaca demo (one turn a row) and the shared tool-call set's conversations
with the tool turns made text (several assistant turns a row, so the masked path renders each
prefix of the conversation).

    .venv/bin/python bench/loss_mask.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "datasets"


def multi_turn(examples):
    """The tool-call conversations as plain chat: tool calls and results as text turns."""
    from sage_tui.core.data import Example

    chats = []
    for example in examples:
        messages = []
        for message in example.messages:
            content = message.get("content") or str(message.get("tool_calls"))
            role = "user" if message["role"] == "tool" else message["role"]
            messages.append({"role": role, "content": content})
        chats.append(Example(messages=messages, line=example.line))
    return chats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from sage_tui.core.data import load_dataset_file
    from sage_tui.core.data.loss_mask import tokenize_example
    from sage_tui.core.models.builtin import is_provisioned
    from sage_tui.paths import Paths, resolve_home

    model = Paths(resolve_home()).model_dir("smollm2-135m-instruct")
    if not is_provisioned(model):
        parser.error(f"the built-in model is not provisioned ({model}): run make setup first")
    tokenizer = AutoTokenizer.from_pretrained(model)
    sets = {
        "alpaca_en_demo": load_dataset_file(SHARED / "alpaca_en_demo.json").examples,
        "glaive multi-turn": multi_turn(
            load_dataset_file(SHARED / "glaive_toolcall_en_demo.json").examples
        ),
    }
    ways = {
        "baseline": lambda e: tokenizer.apply_chat_template(e.messages, tokenize=True),
        "masked": lambda e: tokenize_example(e, tokenizer, max_length=1024),
        "prompts": lambda e: tokenize_example(e, tokenizer, max_length=1024, train_on_prompts=True),
    }
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {sys.version}")
    print(f"{'dataset':<18} {'rows':>5} {'turns':>6} " + " ".join(f"{w:>14}" for w in ways))
    for name, examples in sets.items():
        turns = statistics.fmean(
            sum(m["role"] == "assistant" for m in e.messages) for e in examples
        )
        cells = []
        for way in ways.values():
            times = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                for example in examples:
                    way(example)
                times.append(time.perf_counter() - started)
            cells.append(f"{len(examples) / statistics.median(times):>9,.0f} rows/s")
        print(f"{name:<18} {len(examples):>5} {turns:>6.1f} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
