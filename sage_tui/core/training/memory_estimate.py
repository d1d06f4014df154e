"""How much memory a LoRA fine-tuning job takes, estimated from the base model's shape.

Pure arithmetic (no torch, no files): :func:`estimate_training_memory` turns a
:class:`TrainingShape` and the job's settings into a :class:`TrainingMemory`, each part in
bytes. ``memory_fit`` reads the shape from a model folder and judges the figures against a
GPU's (or the host's) free memory.

The formula, per GPU (each DDP worker holds a full replica and its own batch)::

    weights     = P x d                                    P parameters, d bytes per value
    LoRA        = T x (4 + 4 + 8)                          T = sum over adapted Linears of
                                                           r x (in + out); fp32 parameter,
                                                           its gradient, AdamW's two moments
    activations = L x b x s x A x d                        without gradient checkpointing
                = L x b x s x h x d + b x s x A x d        with it: each layer's input, plus
                                                           one layer recomputed in backward
    logits      = b x s x V x 4                            the fp32 logits the loss reads
    overhead    = 1 GiB + (activations + logits) / 10      CUDA context, cuBLAS workspace,
                                                           the allocator's fragmentation

with ``A = 4h + 2q + 2k + 4I`` values per token and layer for a Llama-style block (h hidden
size, q = heads x head_dim, k = KV heads x head_dim, I the MLP width): the two norms' inputs
and outputs (4h), Q, K and V kept for attention's backward (q + 2k), attention's output
(q), and the MLP's gate, up, activated gate and product (4I). Attention scores are not kept:
SDPA / flash attention recompute them (the ``5as/h`` term of Korthikanti et al. drops out).

Sources: weights and AdamW state as in Rajbhandari et al., "ZeRO" (2020) §3.1, with only the
LoRA parameters trainable and kept in fp32 (PEFT's ``autocast_adapter_dtype``); LoRA's
parameter count from Hu et al., "LoRA" (2021) §4 (r x (d_in + d_out) per adapted matrix);
activations after Korthikanti et al., "Reducing Activation Recomputation in Large Transformer
Models" (2022) §4.1, counted for the SwiGLU block; checkpointing keeps only each layer's
input (Chen et al., "Training Deep Nets with Sublinear Memory Cost", 2016). The logits term
is what often dominates for small models with large vocabularies (SmolLM2: V = 49152).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ALL_LINEAR",
    "GIB",
    "TrainingMemory",
    "TrainingShape",
    "estimate_training_memory",
    "lora_parameters",
]

GIB = 1024**3
ALL_LINEAR = "all-linear"
ADAMW_BYTES_PER_TRAINABLE = 4 + 4 + 8
"""fp32 parameter, fp32 gradient, AdamW's first and second moments (fp32 each)."""
LOGIT_BYTES = 4
"""The loss reads the logits as fp32."""
FRAMEWORK_BYTES = GIB
"""CUDA context and cuBLAS workspace on a GPU; torch and transformers themselves on a CPU."""
FRAGMENTATION_SHARE = 10
"""The allocator's fragmentation, as 1/N of the memory that comes and goes each step."""


@dataclass(frozen=True)
class TrainingShape:
    """What the training estimate needs to know about a base model (from its config.json)."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    """Q, K and V have biases (Qwen2)."""
    dtype_bytes: int = 2
    parameters: int | None = None
    """Counted from the safetensors headers; None: computed from the shape."""

    @property
    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each Linear in one decoder layer, by PEFT's module names."""
        h, i = self.hidden_size, self.intermediate_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def parameter_count(self) -> int:
        """The parameters: counted ones when known, else embeddings + layers + final norm."""
        if self.parameters is not None:
            return self.parameters
        h = self.hidden_size
        layer = sum(n_in * n_out for n_in, n_out in self.linears.values()) + 2 * h
        if self.attention_bias:
            layer += (
                self.num_attention_heads * self.head_dim + 2 * self.num_kv_heads * self.head_dim
            )
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_layers * layer + h

    @property
    def activation_values(self) -> int:
        """Values kept per token and layer for backward (``A`` in the module's formula)."""
        h, i = self.hidden_size, self.intermediate_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return 4 * h + 2 * q + 2 * kv + 4 * i


@dataclass(frozen=True)
class TrainingMemory:
    """One job's estimated memory per GPU, in bytes."""

    weights: int
    lora: int
    """LoRA parameters, their gradients and AdamW's state."""
    activations: int
    logits: int
    overhead: int
    trainable: int
    """LoRA parameters (a count, not bytes)."""
    gradient_checkpointing: bool

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.activations + self.logits + self.overhead

    def summary(self) -> str:
        """ "~2.1 GiB (weights 0.3, LoRA+optimizer 0.1, activations 0.4, logits 0.4, overhead
        1.1)": the figures in GiB, plain text."""
        parts = (
            ("weights", self.weights),
            ("LoRA+optimizer", self.lora),
            ("activations", self.activations),
            ("logits", self.logits),
            ("overhead", self.overhead),
        )
        inside = ", ".join(f"{name} {gib(value)}" for name, value in parts)
        return f"~{gib(self.total)} GiB ({inside})"


def gib(value: int) -> str:
    """Bytes as GiB with one decimal ("0.3"; "<0.1" for a little more than nothing)."""
    figure = value / GIB
    return "<0.1" if 0 < figure < 0.05 else f"{figure:.1f}"


def lora_parameters(shape: TrainingShape, rank: int, target_modules: str | Sequence[str]) -> int:
    """Trainable LoRA parameters: r x (in + out) for each adapted Linear of each layer.

    ``"all-linear"`` adapts every Linear of the decoder layers (PEFT leaves the output layer
    out); a list adapts the Linears named in it (names outside the Llama block count nothing).
    """
    linears = shape.linears
    names = linears if target_modules == ALL_LINEAR else set(target_modules)
    per_layer = sum(
        rank * (n_in + n_out) for name, (n_in, n_out) in linears.items() if name in names
    )
    return shape.num_layers * per_layer


def estimate_training_memory(
    shape: TrainingShape,
    *,
    lora_rank: int,
    target_modules: str | Sequence[str] = ALL_LINEAR,
    batch_size: int,
    max_length: int,
    gradient_checkpointing: bool,
    dtype_bytes: int | None = None,
) -> TrainingMemory:
    """The memory one GPU needs to train a LoRA adapter on `shape` (see the module's formula).

    `batch_size` is per device and `max_length` the longest row, so this is the worst step;
    `dtype_bytes` defaults to the model's own (the runner loads weights as saved).
    """
    d = dtype_bytes or shape.dtype_bytes
    tokens = batch_size * max_length
    trainable = lora_parameters(shape, lora_rank, target_modules)
    layer_values = tokens * shape.activation_values * d
    if gradient_checkpointing:
        activations = shape.num_layers * tokens * shape.hidden_size * d + layer_values
    else:
        activations = shape.num_layers * layer_values
    logits = tokens * shape.vocab_size * LOGIT_BYTES
    return TrainingMemory(
        weights=shape.parameter_count * d,
        lora=trainable * ADAMW_BYTES_PER_TRAINABLE,
        activations=activations,
        logits=logits,
        overhead=FRAMEWORK_BYTES + (activations + logits) // FRAGMENTATION_SHARE,
        trainable=trainable,
        gradient_checkpointing=gradient_checkpointing,
    )
