"""Expert training settings: the TRL `SFTConfig` arguments a job's `extra` may set.

A spec's `extra` goes straight into `SFTConfig`, so it is limited to :data:`EXPERT_SETTINGS`:
arguments that change how the model is trained and nothing else. Everything the studio itself
decides, or that could reach outside the job, is left out: where things are written
(`output_dir`, `logging_dir`), how progress is reported and checkpoints are kept (`logging_*`,
`save_*`, `eval_*`, `report_to`), resuming (`resume_from_checkpoint`), the Hub (`push_to_hub`,
`hub_token`, ...), code or files it would load (`trust_remote_code`, `model_init_kwargs`,
`chat_template_path`, `dataset_kwargs`), process launchers and compilers (`deepspeed`, `fsdp`,
`torch_compile*`, `ddp_*`, `accelerator_config`), and what a spec field already sets
(`learning_rate`, `lr_scheduler_type`, `max_length`, `seed`, ...).

Each value is checked too, so a typo fails when the job is submitted (and again when the
runner reads spec.json), in one line that says what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

OPTIMIZERS = (
    "adamw_torch",
    "adamw_torch_fused",
    "adafactor",
    "sgd",
    "adagrad",
    "rmsprop",
    "adamw_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "lion_8bit",
    "lion_32bit",
)
"""Optimizers (transformers' `OptimizerNames`) that take no extra files or arguments; the
8-bit ones need bitsandbytes, which says so when it is missing."""


@dataclass(frozen=True)
class ExpertSetting:
    """One allowed `SFTConfig` argument: what it does and what values it takes."""

    help: str
    expected: str
    """What a value must be, after "must be"."""
    accepts: Callable[[Any], bool]


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


def _number(low: float, high: float, *, low_open: bool = False, none: bool = False):
    def accepts(value: Any) -> bool:
        if value is None:
            return none
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value) or value > high:
            return False
        return value > low if low_open else value >= low

    return accepts


def _whole(low: int, high: int, *, none: bool = False):
    def accepts(value: Any) -> bool:
        if value is None:
            return none
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    return accepts


def _choice(*choices: str):
    return lambda value: isinstance(value, str) and value in choices


def _flags(value: Any) -> bool:
    """A small object of named switches, e.g. {"use_reentrant": false}."""
    return (
        isinstance(value, dict)
        and len(value) <= 8
        and all(
            isinstance(k, str) and k.isidentifier() and isinstance(v, (bool, int))
            for k, v in value.items()
        )
    )


EXPERT_SETTINGS: Mapping[str, ExpertSetting] = {
    "weight_decay": ExpertSetting("optimizer weight decay", "a number from 0 to 1", _number(0, 1)),
    "adam_beta1": ExpertSetting("Adam beta1", "a number in [0, 1)", _number(0, 0.999999)),
    "adam_beta2": ExpertSetting("Adam beta2", "a number in [0, 1)", _number(0, 0.999999)),
    "adam_epsilon": ExpertSetting(
        "Adam epsilon", "a number above 0, at most 1", _number(0, 1, low_open=True)
    ),
    "optim": ExpertSetting("optimizer", f"one of {', '.join(OPTIMIZERS)}", _choice(*OPTIMIZERS)),
    "max_grad_norm": ExpertSetting(
        "gradient clipping (0: none)", "a number from 0 to 1000", _number(0, 1000)
    ),
    "label_smoothing_factor": ExpertSetting(
        "label smoothing", "a number in [0, 1)", _number(0, 0.999999)
    ),
    "neftune_noise_alpha": ExpertSetting(
        "NEFTune noise (5 to 15 is typical)",
        "null or a number from 0 to 100",
        _number(0, 100, none=True),
    ),
    "gradient_checkpointing": ExpertSetting(
        "recompute activations to save memory (default: on with a GPU)", "true or false", _bool
    ),
    "gradient_checkpointing_kwargs": ExpertSetting(
        "arguments of gradient checkpointing",
        'an object of switches, e.g. {"use_reentrant": false}',
        _flags,
    ),
    "bf16": ExpertSetting("bfloat16 mixed precision", "true or false", _bool),
    "fp16": ExpertSetting("float16 mixed precision", "true or false", _bool),
    "tf32": ExpertSetting("TF32 matrix maths on Ampere and newer", "true or false", _bool),
    "use_liger_kernel": ExpertSetting("Liger kernels (GPUs)", "true or false", _bool),
    "torch_empty_cache_steps": ExpertSetting(
        "empty the CUDA cache every N steps",
        "null or a whole number from 1 to 100000",
        _whole(1, 100_000, none=True),
    ),
    "dataloader_num_workers": ExpertSetting(
        "data loading processes", "a whole number from 0 to 64", _whole(0, 64)
    ),
    "dataloader_pin_memory": ExpertSetting("pin data-loader memory", "true or false", _bool),
    "data_seed": ExpertSetting(
        "seed of the data order (default: the job's seed)",
        "null or a whole number from 0 to 2**32-1",
        _whole(0, 2**32 - 1, none=True),
    ),
    "train_sampling_strategy": ExpertSetting(
        "order of the rows",
        "one of random, sequential, group_by_length",
        _choice("random", "sequential", "group_by_length"),
    ),
    "average_tokens_across_devices": ExpertSetting(
        "exact loss across several GPUs", "true or false", _bool
    ),
    "packing": ExpertSetting("pack several rows into one sequence", "true or false", _bool),
    "packing_strategy": ExpertSetting(
        "how rows are packed",
        "one of bfd, bfd_split, wrapped",
        _choice("bfd", "bfd_split", "wrapped"),
    ),
    "padding_free": ExpertSetting("no padding (flattened batches)", "true or false", _bool),
    "pad_to_multiple_of": ExpertSetting(
        "pad sequences to a multiple of N",
        "null or a whole number from 1 to 4096",
        _whole(1, 4096, none=True),
    ),
    "loss_type": ExpertSetting("loss", "one of nll, dft", _choice("nll", "dft")),
    "activation_offloading": ExpertSetting(
        "offload activations to the CPU", "true or false", _bool
    ),
}
"""The `SFTConfig` arguments a job's `extra` may set (TRL 1.x names), and their values."""


_MASKING = ("assistant_only_loss", "completion_only_loss")
"""Which tokens carry loss is decided when the rows are tokenized (`core.data.loss_mask`)."""


def expert_problems(extra: object) -> list[str]:
    """Why `extra` cannot go into `SFTConfig`, one line each (none: it can)."""
    if not isinstance(extra, dict):
        return [
            "expert settings (extra) must be an object of names and values,"
            f" not {type(extra).__name__}"
        ]
    problems = []
    masking = sorted(name for name in extra if name in _MASKING)
    if masking:
        problems.append(
            f"{', '.join(masking)} is the studio's to set: jobs train on the assistant replies"
            " only by default; train on prompts too (--train-on-prompts) for every token"
        )
    unknown = sorted(
        _shown(name) for name in extra if name not in EXPERT_SETTINGS and name not in _MASKING
    )
    if unknown:
        problems.append(
            f"expert setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
            f" not allowed in extra; allowed: {', '.join(EXPERT_SETTINGS)}"
        )
    for name, value in extra.items():
        setting = EXPERT_SETTINGS.get(name)
        if setting is not None and not setting.accepts(value):
            problems.append(f"expert setting {name}={_shown(value)} must be {setting.expected}")
    return problems


def _shown(value: Any) -> str:
    """`value` as Python writes it, cut to 40 characters (a name from a file may be huge)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
