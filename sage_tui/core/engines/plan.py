"""Engine settings from the hardware: how vLLM should be started for one model on this machine.

:func:`plan_engine` is a pure function from a model's shape (:class:`ModelShape`, read from its
``config.json`` and weight files) and the machine's memory (:class:`Hardware`) to the arguments
vLLM needs (:class:`EnginePlan`): device, tensor parallel size, memory fraction or CPU KV cache
space, context length and LoRA limits, plus plain-language notes explaining each choice.

It is written for a studio where training and serving share GPUs, so every figure comes from the
memory that is free *now*, never from a fixed fraction of the card. It never returns a plan that
would run out of memory: when the model cannot fit it raises :class:`ModelTooLarge` with figures.

Only the standard library is used; the resource monitor's snapshot is converted with
:func:`hardware_from_snapshot`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sage_tui.core.models.folder import read_json_object
from sage_tui.errors import ModelError, SageError

if TYPE_CHECKING:
    from sage_tui.core.gpu import ResourceSnapshot

__all__ = [
    "CPU_DEFAULT_CONTEXT",
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

GIB = 1024**3

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

MAX_GPU_MEMORY_UTILIZATION = 0.92
"""The largest ``gpu_memory_utilization`` handed to vLLM, even on an idle GPU."""

BLOCK_TOKENS = 16
"""vLLM's KV block size; a KV-limited context is rounded down to whole blocks."""

CPU_RUNTIME_RESERVE = 2 * GIB
"""RAM left on CPU for the Python process, tokenizer, activations and the OS."""

CPU_MAX_KV_GIB = 16
CPU_KV_SEQUENCES = 4
"""Full-length conversations the CPU KV cache is sized for."""
"""Largest CPU KV cache: more only slows start-up, CPU serving never batches that much."""

LORA_PROJECTIONS = 8
"""Hidden-wide projections per layer that hold a LoRA slot (see :func:`lora_slot_bytes`)."""


class ModelTooLarge(SageError):
    """The model (with a minimal KV cache) does not fit in the memory this machine has free."""


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs to know about a model (read from config.json + weight file sizes)."""

    weight_bytes: int
    """Sum of the weight files on disk (``*.safetensors``, else ``pytorch_model*.bin``)."""
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    dtype_bytes: int = 2
    """Bytes per value: 2 for bf16/fp16, 4 for float32."""

    def __post_init__(self) -> None:
        for name in (
            "num_layers",
            "num_attention_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
            "dtype_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelShape.{name} must be positive, got {getattr(self, name)}")
        if self.weight_bytes < 0:
            raise ValueError(f"ModelShape.weight_bytes must not be negative: {self.weight_bytes}")

    @property
    def hidden_size(self) -> int:
        """Width of the attention output, which stands in for the model's hidden size."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes one token takes across all layers (before tensor parallel split)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @classmethod
    def from_folder(cls, folder: Path) -> ModelShape:
        """Read the shape of the Hugging Face model in `folder`.

        Keys come from ``config.json``, falling back to its nested ``text_config`` (multimodal
        models keep the language model's keys there). Raises ModelError naming the file and key
        when something needed is missing or not a positive whole number.
        """
        config_file = folder / "config.json"
        config = read_json_object(config_file, f"{folder} has no config.json")
        text = config.get("text_config")
        sections = [config, text] if isinstance(text, dict) else [config]

        def lookup(*keys: str) -> Any:
            # The first key is the standard name; the others are older spellings (GPT-2 style).
            for section in sections:
                for key in keys:
                    if section.get(key) is not None:
                        return section[key]
            return None

        def whole(value: Any, key: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(
                    f"{config_file}: {key} is {value!r}, expected a positive whole number"
                )
            return value

        def required(*keys: str) -> int:
            value = lookup(*keys)
            if value is None:
                raise ModelError(f"{config_file} has no {keys[0]}")
            return whole(value, keys[0])

        num_layers = required("num_hidden_layers", "n_layer", "num_layers")
        heads = required("num_attention_heads", "n_head")
        kv_value = lookup("num_key_value_heads")
        kv_heads = heads if kv_value is None else whole(kv_value, "num_key_value_heads")
        head_value = lookup("head_dim")
        if head_value is None:
            hidden = required("hidden_size", "n_embd", "d_model")
            if hidden % heads:
                raise ModelError(
                    f"{config_file} has no head_dim and hidden_size {hidden} "
                    f"is not a multiple of num_attention_heads {heads}"
                )
            head_dim = hidden // heads
        else:
            head_dim = whole(head_value, "head_dim")
        position_value = lookup("max_position_embeddings", "n_positions")
        max_positions = (
            2048 if position_value is None else whole(position_value, "max_position_embeddings")
        )
        dtype = str(lookup("torch_dtype", "dtype") or "")
        dtype_bytes = 4 if "float32" in dtype else 2

        weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
        if not weights:
            raise ModelError(f"{folder} has no weight files (*.safetensors or pytorch_model*.bin)")
        return cls(
            weight_bytes=sum(path.stat().st_size for path in weights),
            num_layers=num_layers,
            num_attention_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            max_position_embeddings=max_positions,
            dtype_bytes=dtype_bytes,
        )


@dataclass(frozen=True)
class GpuMemory:
    """Memory of one GPU at one moment."""

    total: int
    """Bytes."""
    free: int
    """Bytes; another process (e.g. training) may hold the rest."""
    index: int | None = None
    """The device's NVML index; None means its position in :attr:`Hardware.gpus`."""


@dataclass(frozen=True)
class Hardware:
    """The machine as the planner sees it."""

    gpus: tuple[GpuMemory, ...]
    """Empty on a CPU-only machine."""
    ram_available: int
    """Bytes of RAM free for use (psutil's "available"); holds the CPU KV cache."""
    cpu_count: int


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


def gpu_headroom(total: int) -> int:
    """Bytes left outside vLLM's budget on a GPU: CUDA context, fragmentation, training's jitter."""
    return max(GIB, total // 20)


def working_memory(weights_per_gpu: int) -> int:
    """Bytes inside vLLM's budget that are neither weights, LoRA slots nor KV cache.

    vLLM's start-up profiling pass (activations, sampler logits), CUDA graphs and NCCL buffers
    come out of the same fraction of the GPU as the KV cache. They grow with the model's width;
    1 GiB plus 1/16 of the weights on the GPU is a simple estimate that covers them.
    """
    return GIB + weights_per_gpu // 16


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


def hardware_from_snapshot(snapshot: ResourceSnapshot) -> Hardware:
    """The planner's view of a resource monitor snapshot."""
    return Hardware(
        gpus=tuple(
            GpuMemory(total=gpu.memory_total, free=gpu.memory_free, index=gpu.index)
            for gpu in snapshot.gpus
        ),
        ram_available=max(0, snapshot.ram_total - snapshot.ram_used),
        cpu_count=snapshot.cpu_count,
    )


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


@dataclass(frozen=True)
class _Fit:
    """One tensor parallel candidate: which GPUs, what fraction, what each GPU needs."""

    tp: int
    positions: tuple[int, ...]
    hundredths: int
    budget: int
    weights: int
    working: int
    need: int

    @property
    def fits(self) -> bool:
        return self.hundredths > 0 and self.need <= self.budget


def _try_tp(
    shape: ModelShape,
    gpus: tuple[GpuMemory, ...],
    order: list[int],
    tp: int,
    lora_bytes: int,
    min_context: int,
) -> _Fit:
    positions = tuple(order[:tp])
    cap = round(MAX_GPU_MEMORY_UTILIZATION * 100)
    # Integer hundredths, so rounding down is exact and utilisation x total never exceeds free.
    hundredths = min(
        [cap]
        + [
            max(0, (gpus[i].free - gpu_headroom(gpus[i].total)) * 100 // gpus[i].total)
            if gpus[i].total > 0
            else 0
            for i in positions
        ]
    )
    budget = min(gpus[i].total * hundredths // 100 for i in positions)
    weights = -(-shape.weight_bytes // tp)
    working = working_memory(weights)
    kv = min_context * (shape.kv_bytes_per_token // tp)
    return _Fit(
        tp, positions, hundredths, budget, weights, working, weights + working + lora_bytes + kv
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
    # Most free first; ties keep device order so plans are stable from one poll to the next.
    order = sorted(range(len(gpus)), key=lambda i: (-gpus[i].free, i))

    def label(position: int) -> int:
        index = gpus[position].index
        return position if index is None else index

    sizes = []
    size = 1
    while size <= len(gpus):
        sizes.append(size)
        size *= 2
    valid = [
        tp for tp in sizes if shape.num_attention_heads % tp == 0 and shape.num_kv_heads % tp == 0
    ]
    # 1 always divides, so valid is never empty.
    fits = [_try_tp(shape, gpus, order, tp, lora_bytes, min_context) for tp in valid]
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
    fit: _Fit,
    min_context: int,
    label: Callable[[int], int],
) -> str:
    kv_total = min_context * shape.kv_bytes_per_token
    # What vLLM could be given on each GPU, after headroom and the 0.92 cap.
    usable = sum(
        min(
            max(0, gpus[i].free - gpu_headroom(gpus[i].total)),
            int(gpus[i].total * MAX_GPU_MEMORY_UTILIZATION),
        )
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
