"""What a fine-tuning job is asked to do, with presets sized from the hardware.

A spec is plain data, saved as `spec.json` in the job's folder; the runner reads it from
there, so a job can be resumed or inspected without the process that started it. Every value
is checked before a job starts, and adapters stay servable by vLLM: plain LoRA (no DoRA, no
`modules_to_save`, bias "none") with a rank vLLM accepts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sage_tui.core.data.placeholders import PLACEHOLDER_NAME
from sage_tui.core.engines.plan import VLLM_LORA_RANKS
from sage_tui.core.training.expert_settings import expert_problems
from sage_tui.errors import SageError
from sage_tui.paths import TASK_ID

MAX_PROBES = 5
MAX_PROBE_CHARS = 500
MAX_PROBE_TOKENS = 512


class SpecError(SageError):
    """A hyperparameter or name out of range."""


@dataclass(frozen=True)
class JobSpec:
    """Everything a LoRA fine-tuning job needs. Defaults follow the peers (LoRA on all linear
    layers, as Unsloth and LLaMA-Factory do), which teaches facts far better than q/k/v/o."""

    task_id: str
    base_model: str
    """Registered name of the base model."""
    base_path: str
    dataset: str
    """Path of the dataset file."""
    dataset_format: str | None = None
    """None: detected from the rows."""
    skip_invalid: bool = False
    placeholders: dict[str, str] = field(default_factory=dict)
    """Values for `{{name}}` placeholders in the dataset, filled in before training."""
    columns: dict[str, str] = field(default_factory=dict)
    """The file's own key names for the standard ones ({"instruction": "question", ...});
    empty: the standard names."""
    train_on_prompts: bool = False
    """Train on every token; off: only the assistant replies carry loss."""
    strip_special_tokens: bool = False
    """Remove literal special tokens (`<|im_end|>`, `</s>`, ...) from the rows' text first."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    learning_rate: float = 2e-4
    epochs: float = 3.0
    max_steps: int = -1
    """Positive: stop after this many optimiser steps (overrides epochs)."""
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    eval_fraction: float = 0.0
    seed: int = 42
    save_steps: int = 50
    """Checkpoint interval in optimiser steps."""
    warmup_ratio: float = 0.0
    lr_scheduler: str = "constant"
    gpus: list[int] = field(default_factory=list)
    """GPUs (numbered as nvidia-smi numbers them) the job must run on; empty: the queue picks a
    free one."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further SFTConfig arguments, for experts (e.g. {"use_liger_kernel": true} on GPUs):
    only those in `expert_settings.EXPERT_SETTINGS`."""
    trust_remote_code: bool = False
    """Run the base model's own Python code (its `auto_map`): copied from the base model's
    registry record when the job is prepared, and checked against that record again by the
    runner; never on unless the user registered the model with --trust-remote-code."""
    probes: tuple[str, ...] = ()
    """Prompts the model being trained answers at step 0 and after each checkpoint (see
    `probes`); empty: none (the default: on CPU a round costs about as much as a few steps)."""
    probe_max_tokens: int = 48
    """Tokens each probe answer may have."""

    def __post_init__(self) -> None:
        # spec.json holds a JSON list; the spec keeps a tuple, so a read-back spec is equal.
        if isinstance(self.probes, list):
            object.__setattr__(self, "probes", tuple(self.probes))

    def check(self) -> JobSpec:
        """Raise SpecError naming the first value out of range; return self."""
        problems = spec_problems(self)
        if problems:
            raise SpecError("; ".join(problems))
        return self

    def to_json(self) -> str:
        """The spec as written to spec.json."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: Path) -> JobSpec:
        """Read spec.json; unknown keys (from a newer version) are refused by name."""
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise SpecError(f"{path}: not a JSON object of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"{path}: unknown settings {', '.join(unknown)}")
        return cls(**data)

    def with_changes(self, **changes: Any) -> JobSpec:
        """A copy with some values changed."""
        return replace(self, **changes)


def spec_problems(spec: JobSpec) -> list[str]:
    """Every value out of range, in words."""
    problems = []
    if (id_problem := TASK_ID.problem(spec.task_id)) is not None:
        problems.append(id_problem)
    if spec.lora_r not in VLLM_LORA_RANKS:
        ranks = ", ".join(map(str, VLLM_LORA_RANKS))
        problems.append(f"LoRA rank {spec.lora_r} is not one vLLM serves ({ranks})")
    checks = [
        (spec.lora_alpha > 0, f"LoRA alpha {spec.lora_alpha} must be positive"),
        (0 <= spec.lora_dropout < 1, f"LoRA dropout {spec.lora_dropout} must be in [0, 1)"),
        (0 < spec.learning_rate <= 0.1, f"learning rate {spec.learning_rate} must be in (0, 0.1]"),
        (spec.epochs > 0 or spec.max_steps > 0, "epochs must be positive (or set max steps)"),
        (spec.batch_size >= 1, f"batch size {spec.batch_size} must be at least 1"),
        (spec.grad_accum >= 1, f"gradient accumulation {spec.grad_accum} must be at least 1"),
        (32 <= spec.max_length <= 131072, f"max length {spec.max_length} must be in 32..131072"),
        (0 <= spec.eval_fraction <= 0.5, f"eval fraction {spec.eval_fraction} must be in 0..0.5"),
        (spec.save_steps >= 1, f"checkpoint interval {spec.save_steps} must be at least 1"),
        (0 <= spec.warmup_ratio < 1, f"warmup ratio {spec.warmup_ratio} must be in [0, 1)"),
        (
            spec.lr_scheduler in ("constant", "linear", "cosine"),
            f"scheduler {spec.lr_scheduler!r} must be constant, linear or cosine",
        ),
    ]
    problems += [message for ok, message in checks if not ok]
    problems += expert_problems(spec.extra)
    problems += probe_problems(spec.probes, spec.probe_max_tokens)
    for name in ("trust_remote_code", "train_on_prompts", "strip_special_tokens"):
        if not isinstance(getattr(spec, name), bool):
            problems.append(f"{name} {getattr(spec, name)!r} must be true or false")
    if not isinstance(spec.columns, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in spec.columns.items()
    ):
        problems.append(f"columns {spec.columns!r} must map names to the file's key names")
    if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in spec.gpus) or len(
        set(spec.gpus)
    ) != len(spec.gpus):
        problems.append(f"GPUs {spec.gpus} must be distinct GPU numbers (0, 1, ...)")
    for name, value in spec.placeholders.items():
        if not isinstance(name, str) or not PLACEHOLDER_NAME.fullmatch(name):
            problems.append(
                f"placeholder name {name!r} must be letters, digits or '_', not starting with"
                " a digit"
            )
        elif not isinstance(value, str) or not value.strip():
            problems.append(f"placeholder {{{{{name}}}}} needs a value")
    if not Path(spec.dataset).exists():  # a file, or a folder saved by `datasets`
        problems.append(f"dataset {spec.dataset} does not exist")
    if not Path(spec.base_path).is_dir():
        problems.append(f"base model folder {spec.base_path} does not exist")
    return problems


def probe_problems(probes: Any, max_tokens: Any) -> list[str]:
    """What is wrong with the probe prompts and their token limit, in words."""
    if not isinstance(probes, (tuple, list)) or not all(isinstance(p, str) for p in probes):
        return [f"probes {probes!r} must be a list of prompts"]
    problems = []
    if len(probes) > MAX_PROBES:
        problems.append(f"{len(probes)} probe prompts: at most {MAX_PROBES}")
    for number, prompt in enumerate(probes, 1):
        if not prompt.strip():
            problems.append(f"probe prompt {number} is empty")
        elif len(prompt) > MAX_PROBE_CHARS:
            problems.append(
                f"probe prompt {number} has {len(prompt)} characters: at most {MAX_PROBE_CHARS}"
            )
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_PROBE_TOKENS
    ):
        problems.append(f"probe max tokens {max_tokens!r} must be in 1..{MAX_PROBE_TOKENS}")
    return problems


@dataclass(frozen=True)
class Preset:
    """Starting values for a kind of machine; every value stays editable. LoRA alpha is twice
    the rank in each (and a rank set without an alpha gets twice its value too)."""

    name: str
    description: str
    values: dict[str, Any]


PRESETS = {
    p.name: p
    for p in (
        Preset(
            "cpu",
            "CPU only: short sequences, small batches (minutes for a small model)",
            {
                "batch_size": 2,
                "grad_accum": 1,
                "max_length": 512,
                "lora_r": 16,
                "lora_alpha": 32,
                "save_steps": 20,
            },
        ),
        Preset(
            "small-gpu",
            "one GPU under 40 GiB free",
            {
                "batch_size": 4,
                "grad_accum": 4,
                "max_length": 1024,
                "lora_r": 16,
                "lora_alpha": 32,
                "save_steps": 50,
            },
        ),
        Preset(
            "large-gpu",
            "a GPU with 40 GiB or more free",
            {
                "batch_size": 8,
                "grad_accum": 2,
                "max_length": 2048,
                "lora_r": 32,
                "lora_alpha": 64,
                "save_steps": 100,
            },
        ),
    )
}


def preset_for(gpu_free_bytes: list[int]) -> Preset:
    """The preset for the machine: no GPU, small GPU or large GPU (by the freest GPU)."""
    if not gpu_free_bytes:
        return PRESETS["cpu"]
    return PRESETS["large-gpu" if max(gpu_free_bytes) >= 40 * 1024**3 else "small-gpu"]
