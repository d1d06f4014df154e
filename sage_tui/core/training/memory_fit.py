"""Will a fine-tuning job fit: its memory estimate read from the base model's folder, judged
against the free memory of the GPUs it may use (or the host's RAM without GPUs).

:func:`job_memory` estimates a spec as the runner will run it (gradient checkpointing on with
a GPU unless the spec's expert settings say otherwise, as `trainer_config.sft_arguments` has
it). :func:`judge_fit` is the one rule the studio (refuse at submit) and the queue (wait with
the figures) share: a job that no allowed GPU could hold even empty is refused; one that fits
an allowed GPU's total but not its free memory now waits, saying why.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sage_tui.core.engines.model_shape import ModelShape
from sage_tui.core.models.details import safetensors_parameters
from sage_tui.core.models.folder import read_json_object
from sage_tui.core.training.memory_estimate import (
    TrainingMemory,
    TrainingShape,
    estimate_training_memory,
    gib,
)
from sage_tui.core.training.spec import JobSpec
from sage_tui.errors import SageError

__all__ = [
    "FitVerdict",
    "GpuRoom",
    "job_memory",
    "job_memory_of",
    "judge_fit",
    "memory_for",
    "training_shape",
]


def training_shape(folder: Path) -> TrainingShape:
    """The training shape of the model in `folder` (config.json and safetensors headers).

    ModelError (from ModelShape) when config.json lacks what the engine planner needs too.
    """
    shape = ModelShape.from_folder(folder)
    config = read_json_object(folder / "config.json", f"{folder} has no config.json")
    text = config.get("text_config")
    section = text if isinstance(text, dict) and "vocab_size" in text else config
    hidden = _whole(section.get("hidden_size")) or shape.hidden_size
    counted = safetensors_parameters(folder)
    model_type = str(section.get("model_type") or config.get("model_type") or "")
    return TrainingShape(
        num_layers=shape.num_layers,
        hidden_size=hidden,
        intermediate_size=_whole(section.get("intermediate_size")) or 4 * hidden,
        num_attention_heads=shape.num_attention_heads,
        num_kv_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        vocab_size=_whole(section.get("vocab_size")) or 32000,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=bool(section.get("attention_bias", model_type.startswith("qwen2"))),
        dtype_bytes=shape.dtype_bytes,
        parameters=counted[0] if counted else None,
    )


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def job_memory(spec: JobSpec, *, cuda: bool) -> TrainingMemory:
    """The estimate for `spec` as the runner runs it (blocking: reads the base model's files).

    SageError when the base model's folder cannot be read."""
    return memory_for(
        spec.base_path,
        lora_r=spec.lora_r,
        target_modules=spec.target_modules,
        batch_size=spec.batch_size,
        max_length=spec.max_length,
        extra=spec.extra,
        cuda=cuda,
    )


def memory_for(
    base_path: str,
    *,
    lora_r: int,
    target_modules: str | Sequence[str],
    batch_size: int,
    max_length: int,
    extra: dict,
    cuda: bool,
) -> TrainingMemory:
    """The estimate for these settings: gradient checkpointing on with a GPU unless `extra`
    (the spec's expert settings) says otherwise, as `trainer_config.sft_arguments` has it."""
    checkpointing = bool(extra.get("gradient_checkpointing", cuda))
    targets = target_modules if isinstance(target_modules, str) else tuple(target_modules)
    return _estimate(
        base_path, _stamp(base_path), lora_r, targets, batch_size, max_length, checkpointing
    )


def job_memory_of(spec_values: dict, *, cuda: bool) -> TrainingMemory | None:
    """The estimate for a queued job's spec as stored; None when it cannot be told (the
    queue then places the job as before rather than holding it on a guess)."""
    try:
        return job_memory(JobSpec(**spec_values), cuda=cuda)
    except (SageError, OSError, TypeError, ValueError, AttributeError):
        return None


def _stamp(folder: str) -> float:
    try:
        return (Path(folder) / "config.json").stat().st_mtime
    except OSError:
        return 0.0


@functools.lru_cache(maxsize=64)
def _estimate(
    folder: str,
    stamp: float,  # part of the key: a model replaced in place is read again
    rank: int,
    targets: str | tuple[str, ...],
    batch_size: int,
    max_length: int,
    checkpointing: bool,
) -> TrainingMemory:
    return estimate_training_memory(
        training_shape(Path(folder)),
        lora_rank=rank,
        target_modules=targets,
        batch_size=batch_size,
        max_length=max_length,
        gradient_checkpointing=checkpointing,
    )


@dataclass(frozen=True)
class GpuRoom:
    """One GPU's memory now, as NVML reports it."""

    index: int
    free: int
    total: int


@dataclass(frozen=True)
class FitVerdict:
    """What the figures say about starting a job now."""

    memory: TrainingMemory
    where: str
    """"GPU 0 has 12.0 GiB free", "8.0 GiB RAM free": what the estimate was judged against."""
    refusal: str | None = None
    """The job can never run here (no allowed GPU is that large): refuse it with this."""
    wait: str | None = None
    """It fits an allowed GPU's total but no GPU's free memory now: queue it with this."""
    warning: str | None = None
    """Without GPUs, more than the free RAM (the job may swap)."""

    @property
    def line(self) -> str:
        """ "memory: ~N GiB (weights a, ...) · GPU 0 has x GiB free": the form's and CLI's."""
        return f"memory: {self.memory.summary()} · {self.where}"


ADVICE = "lower batch size or max length"
ADVICE_CHECKPOINTING = f"{ADVICE}, or turn on gradient checkpointing"


def judge_fit(
    memory: TrainingMemory,
    gpus: Sequence[GpuRoom],
    pinned: Sequence[int] = (),
    *,
    ram_free: int = 0,
    ram_total: int = 0,
) -> FitVerdict:
    """Judge `memory` (per GPU; each DDP worker needs all of it) against the GPUs the job may
    use: `pinned` ones, or any of `gpus`. Without GPUs, against the host's RAM."""
    need = memory.total
    needs = f"needs {memory.summary()}"
    advice = ADVICE if memory.gradient_checkpointing else ADVICE_CHECKPOINTING
    if not gpus:
        where = f"{gib(ram_free)} GiB RAM free"
        if ram_total and need > ram_total:
            return FitVerdict(
                memory, where, refusal=f"{needs}; this host has {gib(ram_total)} GiB RAM: {advice}"
            )
        if need > ram_free:
            return FitVerdict(memory, where, warning=f"{needs}; {where}: it may swap")
        return FitVerdict(memory, where)
    allowed = [gpu for gpu in gpus if not pinned or gpu.index in pinned] or list(gpus)
    if pinned:
        # DDP: every pinned GPU holds a replica, so the tightest one decides.
        small = [gpu for gpu in allowed if gpu.total < need]
        short = [gpu for gpu in allowed if gpu.free < need]
        tight = min(allowed, key=lambda gpu: (gpu.free, gpu.index))
        where = f"GPU {tight.index} has {gib(tight.free)} GiB free"
        if small:
            gpu = small[0]
            return FitVerdict(
                memory,
                where,
                refusal=f"{needs}; GPU {gpu.index} has {gib(gpu.total)} GiB in all: {advice}",
            )
        if short:
            gpu = short[0]
            return FitVerdict(
                memory,
                where,
                wait=f"waits for memory: {needs}; GPU {gpu.index} has {gib(gpu.free)} GiB free",
            )
        return FitVerdict(memory, where)
    best = max(allowed, key=lambda gpu: (gpu.free, -gpu.index))
    where = f"GPU {best.index} has {gib(best.free)} GiB free"
    if all(gpu.total < need for gpu in allowed):
        largest = max(allowed, key=lambda gpu: gpu.total)
        return FitVerdict(
            memory,
            where,
            refusal=f"{needs}; the largest GPU here, GPU {largest.index}, has"
            f" {gib(largest.total)} GiB in all: {advice}",
        )
    if best.free < need:
        return FitVerdict(memory, where, wait=f"waits for memory: {needs}; {where}")
    return FitVerdict(memory, where)
