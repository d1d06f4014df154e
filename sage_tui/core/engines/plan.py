"""Engine settings from the hardware: how vLLM should be started for one model on this machine.

:func:`plan_engine` is a pure function from a model's shape (:class:`ModelShape`, read from its
``config.json`` and weight files) and the machine's memory (:class:`Hardware`) to the arguments
vLLM needs (:class:`EnginePlan`): device, tensor parallel size, memory fraction or CPU KV cache
space, context length and LoRA limits, plus plain-language notes explaining each choice.

It is written for a studio where training and serving share GPUs, so every figure comes from the
memory that is free *now*, never from a fixed fraction of the card. It never returns a plan that
would run out of memory: when the model cannot fit it raises :class:`ModelTooLarge` with figures.

Only the standard library is used. The inputs live in :mod:`.model_shape` and :mod:`.hardware`
(which converts the resource monitor's snapshot with :func:`hardware_from_snapshot`), the GPU
budgets and tensor parallel candidates in :mod:`.gpu_fit`; their public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sage_tui.core.engines.gpu_fit import (
    MAX_GPU_MEMORY_UTILIZATION,
    GpuFit,
    gpu_headroom,
    gpu_order,
    spare_bytes,
    tensor_parallel_fits,
    working_memory,
)
from sage_tui.core.engines.hardware import GIB, GpuMemory, Hardware, hardware_from_snapshot
from sage_tui.core.engines.model_shape import ModelShape
from sage_tui.errors import SageError

__all__ = [
    "CPU_DEFAULT_CONTEXT",
    "GIB",
    "GPU_DEFAULT_CONTEXT",
    "MAX_GPU_MEMORY_UTILIZATION",
    "MIN_CONTEXT",
    "VLLM_LORA_RANKS",
    "EnginePlan",
    "GpuMemory",
    "Hardware",
    "ModelShape",
    "ModelTooLarge",
    "gpu_headroom",
    "hardware_from_snapshot",
    "lora_rank_for",
    "lora_slot_bytes",
    "plan_engine",
    "working_memory",
]

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The only values vLLM accepts for ``max_lora_rank``."""

DEFAULT_ADAPTER_RANK = 16
"""The rank the default training presets use; the engine always has room for it."""

MIN_CONTEXT = 2048
"""Tokens of KV cache a plan must hold at least (or the model's own limit, if smaller)."""

GPU_DEFAULT_CONTEXT = 32768
"""Context cap on GPU when none is requested: longer contexts cost KV memory few chats use."""

CPU_DEFAULT_CONTEXT = 8192
"""Context cap on CPU when none is requested: CPU prefill of long prompts is very slow."""

BLOCK_TOKENS = 16
"""vLLM's KV block size; a KV-limited context is rounded down to whole blocks."""

CPU_RUNTIME_RESERVE = 2 * GIB
"""RAM left on CPU for the Python process, tokenizer, activations and the OS."""

CPU_MAX_KV_GIB = 16
"""Largest CPU KV cache: more only slows start-up, CPU serving never batches that much."""

CPU_KV_SEQUENCES = 4
"""Full-length conversations the CPU KV cache is sized for."""

LORA_PROJECTIONS = 8
"""Hidden-wide projections per layer that hold a LoRA slot (see :func:`lora_slot_bytes`)."""


class ModelTooLarge(SageError):
    """The model (with a minimal KV cache) does not fit in the memory this machine has free."""


@dataclass(frozen=True)
class EnginePlan:
    """The settings vLLM is started with, and why."""

    device: str
    """"cuda" or "cpu"."""
    tensor_parallel_size: int
    gpu_memory_utilization: float | None
    """vLLM's fraction of TOTAL GPU memory this engine may take; None on CPU."""
    cpu_kv_cache_gib: int | None
    """``VLLM_CPU_KVCACHE_SPACE`` on CPU; None on GPU."""
    max_model_len: int
    max_lora_rank: int
    max_loras: int
    kv_cache_tokens: int
    """How many tokens of KV cache the budget holds (for display)."""
    notes: tuple[str, ...]
    """Plain lines explaining the choices, for the UI."""
    gpu_indices: tuple[int, ...] = field(default=())
    """GPUs to use, most free first; empty on CPU.

    The launcher must expose exactly these (``CUDA_VISIBLE_DEVICES`` with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA numbers GPUs as NVML does): vLLM otherwise takes
    GPUs 0..N-1, which may be the ones training is using.
    """


def lora_slot_bytes(shape: ModelShape, max_lora_rank: int, max_loras: int) -> int:
    """Bytes vLLM preallocates for `max_loras` adapters of rank `max_lora_rank`.

    Each slot holds an A (hidden x r) and a B (r x hidden) matrix per projection per layer. The
    attention projections q, k, v, o count as 4 hidden-wide projections and the MLP's gate, up
    and down (about 3.5 times as wide) as another 4, hence :data:`LORA_PROJECTIONS` = 8. Slots
    are not divided across tensor parallel ranks, which overstates them a little.
    """
    per_slot = 2 * max_lora_rank * shape.hidden_size * LORA_PROJECTIONS * shape.num_layers
    return max_loras * per_slot * shape.dtype_bytes


def lora_rank_for(max_adapter_rank: int) -> int:
    """The ``max_lora_rank`` vLLM needs to serve adapters up to `max_adapter_rank`.

    At least :data:`DEFAULT_ADAPTER_RANK`, so adapters trained with the default presets load
    without restarting the engine. Raises SageError above 512, the largest rank vLLM serves.
    """
    if max_adapter_rank < 0:
        raise SageError(f"adapter rank {max_adapter_rank} is negative")
    if max_adapter_rank > VLLM_LORA_RANKS[-1]:
        raise SageError(
            f"adapter rank {max_adapter_rank} is above {VLLM_LORA_RANKS[-1]}, "
            "the largest vLLM serves"
        )
    want = max(max_adapter_rank, DEFAULT_ADAPTER_RANK)
    return next(rank for rank in VLLM_LORA_RANKS if rank >= want)


def plan_engine(
    shape: ModelShape,
    hardware: Hardware,
    *,
    max_adapter_rank: int = 0,
    max_model_len: int | None = None,
    max_loras: int = 4,
) -> EnginePlan:
    """Choose vLLM's settings for `shape` on `hardware`.

    Rules:

    1. The GPU budget comes from FREE memory, never a fixed fraction of the total: training may
       hold memory on the same GPU. Each GPU keeps :func:`gpu_headroom` (max(1 GiB, 5% of
       total)) outside the budget. ``gpu_memory_utilization`` is the smallest
       (free - headroom) / total among the GPUs used, rounded DOWN to 2 decimals and capped at
       0.92: vLLM refuses to start unless free memory >= utilisation x total, so it never
       exceeds free / total. Inside the budget, :func:`working_memory` is set aside for vLLM's
       activations and CUDA graphs.
    2. Tensor parallel size is the smallest power of two not above the GPU count that divides
       both the attention and KV head counts and lets weights / TP, the LoRA slots, working
       memory and the KV cache for min(MIN_CONTEXT, model limit, requested length) tokens fit in
       every used GPU's budget. GPUs with the most free memory are used first, so a small model
       on a busy server takes one idle GPU and leaves the rest to training.
    3. KV bytes per token = 2 (K, V) x layers x KV heads x head_dim x dtype bytes, split across
       TP ranks. LoRA slots are reserved as :func:`lora_slot_bytes`.
    4. ``max_model_len`` = min(model limit, requested length (clamped to the model limit with a
       note), tokens the KV budget holds, 32768 when nothing is requested); when the KV budget
       is what limits it, it is rounded down to a multiple of 16 (vLLM's block size).
    5. Without GPUs the engine runs on CPU with TP 1: the KV cache is half of the RAM left after
       weights, LoRA slots and 2 GiB for the runtime, between 1 and 16 GiB; the default context
       cap is 8192 (CPU prefill is slow). Less than weights + slots + 3 GiB of RAM is too little.
    6. ``max_lora_rank`` is the smallest rank vLLM accepts that is >= max(max_adapter_rank, 16)
       (:func:`lora_rank_for`); above 512 raises SageError.
    7. When the model does not fit even with the largest valid TP, ModelTooLarge is raised with
       the figures. A returned plan always fits.
    """
    if max_loras < 1:
        raise SageError(f"max_loras is {max_loras}: at least 1 adapter slot is needed")
    if max_model_len is not None and max_model_len < 1:
        raise SageError(f"max_model_len {max_model_len} is not a positive number of tokens")
    lora_rank = lora_rank_for(max_adapter_rank)
    lora_bytes = lora_slot_bytes(shape, lora_rank, max_loras)
    min_context = min(MIN_CONTEXT, shape.max_position_embeddings)
    if max_model_len is not None:
        # Someone asking for a short context should not be refused for lack of a long one.
        min_context = min(min_context, max_model_len)
    if not hardware.gpus:
        return _plan_cpu(
            shape, hardware, lora_rank, lora_bytes, max_loras, max_model_len, min_context
        )
    return _plan_gpu(shape, hardware, lora_rank, lora_bytes, max_loras, max_model_len, min_context)


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def _plan_cpu(
    shape: ModelShape,
    hardware: Hardware,
    lora_rank: int,
    lora_bytes: int,
    max_loras: int,
    requested: int | None,
    min_context: int,
) -> EnginePlan:
    left = hardware.ram_available - shape.weight_bytes - lora_bytes - CPU_RUNTIME_RESERVE
    if left < GIB:
        raise ModelTooLarge(
            f"the model needs {_gib(shape.weight_bytes)} of RAM for weights, "
            f"{_gib(lora_bytes)} for adapter slots, {_gib(CPU_RUNTIME_RESERVE)} for the runtime "
            f"and 1.0 GiB of KV cache; this machine has {_gib(hardware.ram_available)} available "
            "and no GPU: close other programs or use a smaller model"
        )
    # Enough for a few full-length conversations at once, and never more than half of what is
    # left, so the OS, the UI and a tokenizer keep room. vLLM allocates all of it up front.
    wanted_context = min(requested or CPU_DEFAULT_CONTEXT, shape.max_position_embeddings)
    wanted_bytes = CPU_KV_SEQUENCES * wanted_context * shape.kv_bytes_per_token
    kv_gib = max(1, min(CPU_MAX_KV_GIB, left // GIB // 2, -(-wanted_bytes // GIB)))
    kv_tokens = kv_gib * GIB // shape.kv_bytes_per_token
    if kv_tokens < min_context:
        raise ModelTooLarge(
            f"a {kv_gib} GiB CPU KV cache holds {kv_tokens:,} tokens of this model, "
            f"fewer than {min_context:,}: free RAM or use a smaller model"
        )
    notes = [
        f"no GPU: CPU engine on {hardware.cpu_count} cores with "
        f"{_gib(hardware.ram_available)} of RAM available",
        f"weights {_gib(shape.weight_bytes)}, adapter slots {_gib(lora_bytes)}, runtime "
        f"{_gib(CPU_RUNTIME_RESERVE)}: KV cache {kv_gib} GiB "
        f"({CPU_KV_SEQUENCES} full-length conversations; at most half of what is left)",
    ]
    length = _context_length(shape, kv_tokens, requested, CPU_DEFAULT_CONTEXT, notes)
    notes.append(_lora_note(lora_rank, max_loras))
    return EnginePlan(
        device="cpu",
        tensor_parallel_size=1,
        gpu_memory_utilization=None,
        cpu_kv_cache_gib=kv_gib,
        max_model_len=length,
        max_lora_rank=lora_rank,
        max_loras=max_loras,
        kv_cache_tokens=kv_tokens,
        notes=tuple(notes),
    )


def _plan_gpu(
    shape: ModelShape,
    hardware: Hardware,
    lora_rank: int,
    lora_bytes: int,
    max_loras: int,
    requested: int | None,
    min_context: int,
) -> EnginePlan:
    gpus = hardware.gpus
    order = gpu_order(gpus)

    def label(position: int) -> int:
        index = gpus[position].index
        return position if index is None else index

    fits = tensor_parallel_fits(shape, gpus, order, lora_bytes, min_context)
    chosen = next((fit for fit in fits if fit.fits), None)
    if chosen is None:
        raise ModelTooLarge(_too_large_message(shape, gpus, fits[-1], min_context, label))

    notes = [
        f"GPU {label(i)} has {_gib(gpus[i].free)} free of {_gib(gpus[i].total)}: "
        f"engine budget {_gib(gpus[i].total * chosen.hundredths // 100)}"
        for i in chosen.positions
    ]
    used = ", ".join(str(label(i)) for i in chosen.positions)
    others = [label(i) for i in order[chosen.tp :]]
    if chosen.tp == 1:
        line = f"one GPU is enough: GPU {used}"
        if others:
            line += f"; GPUs {', '.join(map(str, sorted(others)))} stay free for other work"
    else:
        line = f"tensor parallel over GPUs {used}: the model does not fit on fewer GPUs"
    notes.append(line)
    kv_per_rank = shape.kv_bytes_per_token // chosen.tp
    kv_budget = chosen.budget - chosen.weights - chosen.working - lora_bytes
    kv_tokens = kv_budget // kv_per_rank
    notes.append(
        f"per GPU: weights {_gib(chosen.weights)}, adapter slots {_gib(lora_bytes)}, "
        f"working memory {_gib(chosen.working)}, KV cache {_gib(kv_budget)} = "
        f"{kv_tokens:,} tokens; gpu_memory_utilization {chosen.hundredths / 100:.2f}"
    )
    length = _context_length(shape, kv_tokens, requested, GPU_DEFAULT_CONTEXT, notes)
    notes.append(_lora_note(lora_rank, max_loras))
    return EnginePlan(
        device="cuda",
        tensor_parallel_size=chosen.tp,
        gpu_memory_utilization=chosen.hundredths / 100,
        cpu_kv_cache_gib=None,
        max_model_len=length,
        max_lora_rank=lora_rank,
        max_loras=max_loras,
        kv_cache_tokens=kv_tokens,
        notes=tuple(notes),
        gpu_indices=tuple(label(i) for i in chosen.positions),
    )


def _too_large_message(
    shape: ModelShape,
    gpus: tuple[GpuMemory, ...],
    fit: GpuFit,
    min_context: int,
    label: Callable[[int], int],
) -> str:
    kv_total = min_context * shape.kv_bytes_per_token
    # What vLLM could be given on each GPU, after headroom and the 0.92 cap.
    usable = sum(
        min(spare_bytes(gpus[i]), int(gpus[i].total * MAX_GPU_MEMORY_UTILIZATION))
        for i in fit.positions
    )
    each = ", ".join(
        f"GPU {label(i)}: {_gib(gpus[i].free)} free of {_gib(gpus[i].total)}" for i in fit.positions
    )
    count = f"{fit.tp} GPU{'s' if fit.tp > 1 else ''}"
    why = ""
    if fit.tp * 2 <= len(gpus):
        why = (
            f"; tensor parallel {fit.tp * 2} would not divide {shape.num_attention_heads} "
            f"attention heads and {shape.num_kv_heads} KV heads"
        )
    return (
        f"the model needs {_gib(shape.weight_bytes)} for weights plus {_gib(kv_total)} of KV "
        f"cache for {min_context} tokens ({_gib(fit.need)} per GPU at tensor parallel {fit.tp}, "
        f"with adapter slots and working memory); {count} {'have' if fit.tp > 1 else 'has'} "
        f"{_gib(usable)} usable ({each}){why}: free GPU memory or use a smaller model"
    )


def _context_length(
    shape: ModelShape,
    kv_tokens: int,
    requested: int | None,
    default_cap: int,
    notes: list[str],
) -> int:
    limit = shape.max_position_embeddings
    if requested is not None:
        want = min(requested, limit)
        if requested > limit:
            notes.append(
                f"requested context {requested:,} tokens is beyond the model's limit of "
                f"{limit:,}: clamped to {limit:,}"
            )
    else:
        want = min(limit, default_cap)
        if limit > default_cap:
            notes.append(
                f"context capped at {default_cap:,} tokens by default (the model allows "
                f"{limit:,}); ask for a longer max_model_len if needed"
            )
    if kv_tokens < want:
        # Whole KV blocks only; a cache under one block keeps its exact size.
        length = kv_tokens // BLOCK_TOKENS * BLOCK_TOKENS or kv_tokens
        notes.append(
            f"context {length:,} tokens: the KV cache holds {kv_tokens:,} tokens, "
            f"fewer than the {want:,} wanted"
        )
        return length
    notes.append(
        f"context {want:,} tokens; the KV cache holds {kv_tokens:,} tokens "
        f"({kv_tokens // want:,} times the context)"
    )
    return want


def _lora_note(lora_rank: int, max_loras: int) -> str:
    return f"adapters: up to {max_loras} at once, rank up to {lora_rank}"
