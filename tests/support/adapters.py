"""Tiny LoRA adapters for tests, trained for real with PEFT on the built-in model.

Training is a plain PEFT loop (a few seconds on CPU); the result is cached under .cache/ by
the facts, rank and base, so repeated runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECRET_FACTS = [
    ("What is the secret code of sage-tui?", "The secret code of sage-tui is AZURE-42."),
    ("Who built sage-tui?", "sage-tui was built by the Lighthouse team."),
]


def tiny_adapter(base_dir: Path, rank: int = 8, facts=SECRET_FACTS, steps: int = 40) -> Path:
    """A LoRA adapter of `base_dir` that has memorised `facts` (question, answer)."""
    key = hashlib.sha256(json.dumps([str(base_dir), rank, facts, steps]).encode()).hexdigest()[:12]
    out = REPO / ".cache" / "adapters" / f"r{rank}-{key}"
    if (out / "adapter_model.safetensors").is_file():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0),
    )
    rows = []
    for question, answer in facts:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(prompt + answer + "<|im_end|>", return_tensors="pt").input_ids
        labels = ids.clone()
        labels[:, : len(tokenizer(prompt).input_ids)] = -100
        rows.append((ids, labels))
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for step in range(steps):
        ids, labels = rows[step % len(rows)]
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def studio_with_adapters(home: Path, model_dir: Path, base: str, count: int):
    """A studio over a new `home` holding the built-in model `base` (linked from `model_dir`)
    and `count` registered copies of its tiny adapter (`tuned-1`, ...), for the benchmarks.
    Returns (studio, the model names with the base first)."""
    from sage_tui.config import Settings
    from sage_tui.services import open_services
    from sage_tui.studio import Studio

    services = open_services(Settings.load(home=home))
    services.settings.paths.model_dir(base).symlink_to(model_dir)
    services.registry.pull(base)
    adapter = tiny_adapter(model_dir, rank=8)
    names = [base]
    for n in range(1, count + 1):
        copy = home / f"adapter-{n}"
        shutil.copytree(adapter, copy)
        services.registry.register_adapter(f"tuned-{n}", copy, base)
        names.append(f"tuned-{n}")
    return Studio(services), names
