"""Which GPUs a model fits on, and what share of each one vLLM may take.

Training and serving share GPUs, so every share comes from the memory that is free *now*: each
GPU keeps :func:`gpu_headroom` outside vLLM's budget, and inside it :func:`working_memory` is set
aside next to the weights, adapter slots and KV cache. :func:`tensor_parallel_fits` sizes every
tensor parallel candidate; the planner takes the smallest that fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from sage_tui.core.engines.hardware import GIB, GpuMemory
from sage_tui.core.engines.model_shape import ModelShape

__all__ = [
    "MAX_GPU_MEMORY_UTILIZATION",
    "GpuFit",
    "gpu_headroom",
    "gpu_order",
    "spare_bytes",
    "tensor_parallel_fits",
    "working_memory",
]

MAX_GPU_MEMORY_UTILIZATION = 0.92
"""The largest ``gpu_memory_utilization`` handed to vLLM, even on an idle GPU."""


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


def spare_bytes(gpu: GpuMemory) -> int:
    """Free bytes on `gpu` beyond its :func:`gpu_headroom` (never negative)."""
    return max(0, gpu.free - gpu_headroom(gpu.total))


def gpu_order(gpus: tuple[GpuMemory, ...]) -> list[int]:
    """Positions in `gpus`, most free first.

    Ties keep device order, so plans are stable from one poll to the next.
    """
    return sorted(range(len(gpus)), key=lambda i: (-gpus[i].free, i))


@dataclass(frozen=True)
class GpuFit:
    """One tensor parallel candidate: which GPUs, what fraction, what each GPU needs."""

    tp: int
    positions: tuple[int, ...]
    """Positions in :attr:`Hardware.gpus` of the GPUs used."""
    hundredths: int
    """``gpu_memory_utilization`` in whole hundredths, the same on every GPU used."""
    budget: int
    """Bytes vLLM may take on each GPU used (the smallest, where their totals differ)."""
    weights: int
    working: int
    need: int
    """Bytes each GPU needs: weights, working memory, adapter slots and the minimal KV cache."""

    @property
    def fits(self) -> bool:
        return self.hundredths > 0 and self.need <= self.budget


def _hundredths(gpu: GpuMemory) -> int:
    # Integer hundredths, so rounding down is exact and utilisation x total never exceeds free.
    if gpu.total <= 0:
        return 0
    return min(round(MAX_GPU_MEMORY_UTILIZATION * 100), spare_bytes(gpu) * 100 // gpu.total)


def _fit(
    shape: ModelShape,
    gpus: tuple[GpuMemory, ...],
    positions: tuple[int, ...],
    lora_bytes: int,
    min_context: int,
) -> GpuFit:
    tp = len(positions)
    hundredths = min(_hundredths(gpus[i]) for i in positions)
    budget = min(gpus[i].total * hundredths // 100 for i in positions)
    weights = -(-shape.weight_bytes // tp)
    working = working_memory(weights)
    kv = min_context * (shape.kv_bytes_per_token // tp)
    return GpuFit(
        tp, positions, hundredths, budget, weights, working, weights + working + lora_bytes + kv
    )


def tensor_parallel_fits(
    shape: ModelShape,
    gpus: tuple[GpuMemory, ...],
    order: list[int],
    lora_bytes: int,
    min_context: int,
) -> list[GpuFit]:
    """One :class:`GpuFit` per tensor parallel size vLLM could use, smallest first.

    The sizes are the powers of two up to the GPU count that divide both the attention and the KV
    head counts; 1 always does, so the list is never empty. Each size takes the first GPUs of
    `order` (see :func:`gpu_order`), and must hold weights / TP, `lora_bytes` of adapter slots,
    working memory and the KV cache for `min_context` tokens on every GPU it uses.
    """
    fits = []
    tp = 1
    while tp <= len(gpus):
        if shape.num_attention_heads % tp == 0 and shape.num_kv_heads % tp == 0:
            fits.append(_fit(shape, gpus, tuple(order[:tp]), lora_bytes, min_context))
        tp *= 2
    return fits
