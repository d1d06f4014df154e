"""Engine plans from the hardware: table-driven cases over realistic models and machines."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sage_tui.core.engines.plan import (
    GIB,
    MAX_GPU_MEMORY_UTILIZATION,
    EnginePlan,
    GpuMemory,
    Hardware,
    ModelShape,
    ModelTooLarge,
    gpu_headroom,
    hardware_from_snapshot,
    lora_rank_for,
    lora_slot_bytes,
    plan_engine,
    working_memory,
)
from sage_tui.core.gpu import GpuSample, ResourceSnapshot
from sage_tui.errors import ModelError, SageError

MIB = 1024**2
H100 = 81559 * MIB  # what NVML reports for an "80 GB" H100

SMOL_135M = ModelShape(269_060_552, 30, 9, 3, 64, 8192)
LLAMA3_8B = ModelShape(16_060_522_496, 32, 32, 8, 128, 8192)
QWEN25_7B = ModelShape(15_231_233_024, 28, 28, 4, 128, 32768)
LLAMA3_70B = ModelShape(141_107_412_992, 80, 64, 8, 128, 8192)
# SmolLM2 with head counts that 2 divides, to show the heads rule is what blocks TP 2.
SMOL_EVEN_HEADS = dataclasses.replace(SMOL_135M, num_attention_heads=8, num_kv_heads=4)


def gpus(*free_gib: float, total: int = H100, ram_gib: int = 256) -> Hardware:
    """A server with one GPU per figure of free memory."""
    return Hardware(
        gpus=tuple(GpuMemory(total=total, free=int(f * GIB)) for f in free_gib),
        ram_available=ram_gib * GIB,
        cpu_count=32,
    )


def cpu(ram_gib: float, cores: int = 8) -> Hardware:
    """A machine without GPUs."""
    return Hardware(gpus=(), ram_available=int(ram_gib * GIB), cpu_count=cores)


# id: (shape, hardware, keyword arguments, expected plan fields)
PLANS = {
    "cpu-24gib-135m": (
        SMOL_135M,
        cpu(24),
        {},
        {
            "device": "cpu",
            "tensor_parallel_size": 1,
            "gpu_memory_utilization": None,
            "cpu_kv_cache_gib": 1,  # 4 x 8192 tokens x 23 KiB, rounded up
            "max_model_len": 8192,
            "gpu_indices": (),
        },
    ),
    "cpu-128gib-8b-kv-sized-for-4-conversations": (
        LLAMA3_8B,
        cpu(128),
        {},
        {"device": "cpu", "cpu_kv_cache_gib": 4, "max_model_len": 8192},
    ),
    "cpu-128gib-qwen-long-context": (
        QWEN25_7B,
        cpu(128),
        {"max_model_len": 32768},
        {"device": "cpu", "cpu_kv_cache_gib": 7, "max_model_len": 32768},  # 4 x 32768 x 56 KiB
    ),
    "cpu-qwen-default-cap-8192": (
        QWEN25_7B,
        cpu(64),
        {},
        {"device": "cpu", "max_model_len": 8192},
    ),
    "1-idle-h100-8b": (
        LLAMA3_8B,
        gpus(79.2),
        {},
        {
            "device": "cuda",
            "tensor_parallel_size": 1,
            "gpu_memory_utilization": 0.92,
            "cpu_kv_cache_gib": None,
            "max_model_len": 8192,
            "gpu_indices": (0,),
        },
    ),
    "1-h100-half-used-by-training-8b": (
        LLAMA3_8B,
        gpus(38),
        {},
        {"device": "cuda", "tensor_parallel_size": 1, "max_model_len": 8192},
    ),
    "1-idle-h100-qwen-default-cap-32768": (
        QWEN25_7B,
        gpus(79.2),
        {},
        {"tensor_parallel_size": 1, "max_model_len": 32768},
    ),
    "8-idle-h100-135m-uses-one": (
        SMOL_135M,
        gpus(*[79.2] * 8),
        {},
        {"tensor_parallel_size": 1, "gpu_indices": (0,)},
    ),
    "8-idle-h100-70b": (LLAMA3_70B, gpus(*[79.2] * 8), {}, {"device": "cuda"}),
    "8-busy-h100-70b-takes-the-two-freest": (
        LLAMA3_70B,
        gpus(70, 20, 75, 60, 79, 79, 10, 50),
        {},
        {"tensor_parallel_size": 2, "gpu_indices": (4, 5)},
    ),
    "8-h100-60gib-free-70b-needs-tp4": (
        LLAMA3_70B,
        gpus(*[60] * 8),
        {},
        {"tensor_parallel_size": 4, "gpu_indices": (0, 1, 2, 3)},
    ),
    "2-gpus-first-nearly-full-8b-uses-second": (
        LLAMA3_8B,
        gpus(3, 70),
        {},
        {"tensor_parallel_size": 1, "gpu_indices": (1,)},
    ),
    "2-idle-gpus-9-heads-135m-tp1": (
        SMOL_135M,
        gpus(79.2, 79.2),
        {},
        {"tensor_parallel_size": 1},
    ),
    "2-small-gpus-even-heads-135m-tp2": (
        SMOL_EVEN_HEADS,
        gpus(2.3, 2.3, total=8 * GIB),
        {},
        {"tensor_parallel_size": 2, "gpu_indices": (0, 1)},
    ),
    "qwen-on-22gib-free-kv-limited": (
        QWEN25_7B,
        gpus(22),
        {"max_model_len": 32768},
        {"tensor_parallel_size": 1},
    ),
    "8b-request-beyond-model-limit-clamped": (
        LLAMA3_8B,
        gpus(79.2),
        {"max_model_len": 131072},
        {"max_model_len": 8192},
    ),
    "qwen-request-shorter-context": (
        QWEN25_7B,
        gpus(79.2),
        {"max_model_len": 4096},
        {"max_model_len": 4096},
    ),
    "8b-rank-64-adapters-8-slots": (
        LLAMA3_8B,
        gpus(79.2),
        {"max_adapter_rank": 64, "max_loras": 8},
        {"max_lora_rank": 64, "max_loras": 8},
    ),
}


def assert_plan_fits(shape: ModelShape, hardware: Hardware, plan: EnginePlan) -> None:
    """The properties every plan has, whatever the case."""
    assert 1 <= plan.max_model_len <= shape.max_position_embeddings
    assert plan.kv_cache_tokens >= plan.max_model_len
    assert plan.max_lora_rank >= 16
    assert all("\n" not in note for note in plan.notes)
    lora = lora_slot_bytes(shape, plan.max_lora_rank, plan.max_loras)
    if plan.device == "cpu":
        assert hardware.gpus == ()
        assert plan.tensor_parallel_size == 1 and plan.gpu_memory_utilization is None
        assert plan.cpu_kv_cache_gib is not None and 1 <= plan.cpu_kv_cache_gib <= 16
        kv = plan.cpu_kv_cache_gib * GIB
        assert plan.kv_cache_tokens * shape.kv_bytes_per_token <= kv
        assert shape.weight_bytes + lora + 2 * GIB + kv <= hardware.ram_available
        return
    tp = plan.tensor_parallel_size
    util = plan.gpu_memory_utilization
    assert plan.device == "cuda" and plan.cpu_kv_cache_gib is None and util is not None
    assert 0 < util <= MAX_GPU_MEMORY_UTILIZATION and round(util, 2) == util
    assert tp & (tp - 1) == 0 and len(plan.gpu_indices) == tp <= len(hardware.gpus)
    assert shape.num_attention_heads % tp == 0 and shape.num_kv_heads % tp == 0
    used = [hardware.gpus[i] for i in plan.gpu_indices]
    unused = [g for i, g in enumerate(hardware.gpus) if i not in plan.gpu_indices]
    for gpu in used:
        # vLLM refuses to start unless free >= utilisation x total; headroom stays on top.
        assert util * gpu.total <= gpu.free - gpu_headroom(gpu.total)
        assert all(gpu.free >= other.free for other in unused)
    budget = min(util * gpu.total for gpu in used)
    weights = shape.weight_bytes / tp
    kv = plan.max_model_len * shape.kv_bytes_per_token / tp
    assert weights + working_memory(int(weights)) + lora + kv <= budget


@pytest.mark.parametrize(("shape", "hardware", "kwargs", "expected"), PLANS.values(), ids=PLANS)
def test_plan(
    shape: ModelShape, hardware: Hardware, kwargs: dict, expected: dict[str, object]
) -> None:
    plan = plan_engine(shape, hardware, **kwargs)
    assert {name: getattr(plan, name) for name in expected} == expected
    assert_plan_fits(shape, hardware, plan)


def test_half_used_gpu_gets_a_fraction_of_its_free_memory() -> None:
    plan = plan_engine(LLAMA3_8B, gpus(38))
    assert plan.gpu_memory_utilization is not None
    assert plan.gpu_memory_utilization <= 38 * GIB / H100
    assert plan.gpu_memory_utilization == 0.42  # (38 - 3.98 headroom) / 79.6, rounded down
    assert any("GPU 0 has 38.0 GiB free of 79.6 GiB" in note for note in plan.notes)


def test_70b_on_idle_server_takes_the_smallest_tensor_parallel_that_fits() -> None:
    plan = plan_engine(LLAMA3_70B, gpus(*[79.2] * 8))
    tp = plan.tensor_parallel_size
    assert tp in (2, 4)
    budget = plan.gpu_memory_utilization * H100
    assert LLAMA3_70B.weight_bytes / tp <= budget
    assert LLAMA3_70B.weight_bytes / (tp // 2) > budget
    assert any(
        f"tensor parallel over GPUs {', '.join(map(str, range(tp)))}" in n for n in plan.notes
    )


def test_small_model_on_a_server_leaves_the_other_gpus_free() -> None:
    plan = plan_engine(SMOL_135M, gpus(10, 79.2, 40))
    assert plan.gpu_indices == (1,)
    assert any("GPUs 0, 2 stay free" in note for note in plan.notes)


def test_kv_limited_context_is_whole_blocks_with_a_note() -> None:
    plan = plan_engine(QWEN25_7B, gpus(22), max_model_len=32768)
    assert plan.max_model_len < 32768
    assert plan.max_model_len % 16 == 0 and plan.max_model_len > plan.kv_cache_tokens - 16
    assert any("the KV cache holds" in note and "fewer than" in note for note in plan.notes)


def test_request_beyond_the_model_limit_is_clamped_with_a_note() -> None:
    plan = plan_engine(LLAMA3_8B, gpus(79.2), max_model_len=131072)
    assert plan.max_model_len == 8192
    assert any("131,072" in note and "clamped to 8,192" in note for note in plan.notes)


# id: (shape, hardware, fragments the one-line message must contain)
TOO_LARGE = {
    "70b-on-one-h100": (
        LLAMA3_70B,
        gpus(79.2),
        [
            "131.4 GiB for weights",
            "0.6 GiB of KV cache for 2048 tokens",
            "1 GPU has",
            "GPU 0: 79.2 GiB free of 79.6 GiB",
            "free GPU memory or use a smaller model",
        ],
    ),
    "70b-on-two-h100-one-busy": (
        LLAMA3_70B,
        gpus(79.2, 30),
        [
            "131.4 GiB for weights",
            "at tensor parallel 2",
            "2 GPUs have",
            "GPU 1: 30.0 GiB free of 79.6 GiB",
        ],
    ),
    "8b-on-cpu-with-4gib": (
        LLAMA3_8B,
        cpu(4),
        ["15.0 GiB of RAM for weights", "4.0 GiB available"],
    ),
    "8b-on-gpu-with-no-free-memory": (
        LLAMA3_8B,
        gpus(0.5),
        ["GPU 0: 0.5 GiB free", "0.0 GiB usable"],
    ),
    "9-heads-on-2-small-gpus": (
        SMOL_135M,
        gpus(2.3, 2.3, total=8 * GIB),
        ["at tensor parallel 1", "tensor parallel 2 would not divide 9 attention heads"],
    ),
}


@pytest.mark.parametrize(("shape", "hardware", "fragments"), TOO_LARGE.values(), ids=TOO_LARGE)
def test_too_large(shape: ModelShape, hardware: Hardware, fragments: list[str]) -> None:
    with pytest.raises(ModelTooLarge) as caught:
        plan_engine(shape, hardware)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("adapter_rank", "max_lora_rank"),
    [(0, 16), (8, 16), (16, 16), (17, 32), (64, 64), (300, 320), (512, 512)],
    ids=lambda value: f"r{value}",
)
def test_max_lora_rank(adapter_rank: int, max_lora_rank: int) -> None:
    assert lora_rank_for(adapter_rank) == max_lora_rank
    plan = plan_engine(LLAMA3_8B, gpus(79.2), max_adapter_rank=adapter_rank)
    assert plan.max_lora_rank == max_lora_rank
    assert_plan_fits(LLAMA3_8B, gpus(79.2), plan)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_adapter_rank": 1024}, "adapter rank 1024 is above 512, the largest vLLM serves"),
        ({"max_adapter_rank": -1}, "adapter rank -1 is negative"),
        ({"max_loras": 0}, "max_loras is 0"),
        ({"max_model_len": 0}, "max_model_len 0 is not a positive number of tokens"),
    ],
    ids=["rank-1024", "rank-negative", "no-lora-slots", "zero-context"],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(SageError, match=message):
        plan_engine(LLAMA3_8B, gpus(79.2), **kwargs)


def test_hardware_from_snapshot_keeps_nvml_indices() -> None:
    def sample(index: int, free_gib: int) -> GpuSample:
        return GpuSample(index, "NVIDIA H100", H100 - free_gib * GIB, H100, free_gib * GIB, 0, ())

    # GPU 1 failed to report, so positions and NVML indices differ.
    snapshot = ResourceSnapshot(
        gpus=(sample(0, 5), sample(2, 70)),
        no_gpu_reason=None,
        cpu_percent=0.0,
        cpu_count=16,
        ram_used=40 * GIB,
        ram_total=128 * GIB,
        taken_at=0.0,
    )
    hardware = hardware_from_snapshot(snapshot)
    assert hardware == Hardware(
        gpus=(GpuMemory(H100, 5 * GIB, 0), GpuMemory(H100, 70 * GIB, 2)),
        ram_available=88 * GIB,
        cpu_count=16,
    )
    plan = plan_engine(LLAMA3_8B, hardware)
    assert plan.gpu_indices == (2,)
    assert any(note.startswith("GPU 2 has 70.0 GiB free") for note in plan.notes)


def write_model(folder: Path, config: dict, weights: dict[str, int]) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    for name, size in weights.items():
        with open(folder / name, "wb") as handle:
            handle.truncate(size)
    return folder


LLAMA_CONFIG = {
    "model_type": "llama",
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_size": 4096,
    "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16",
}

# id: (config.json, weight files with sizes, expected shape)
FOLDERS = {
    "llama-sharded-safetensors": (
        LLAMA_CONFIG,
        {
            "model-00001-of-00002.safetensors": 3000,
            "model-00002-of-00002.safetensors": 1000,
            "pytorch_model.bin": 99999,
        },
        ModelShape(4000, 32, 32, 8, 128, 8192, 2),
    ),
    "bin-only-float32-defaults": (
        {
            "model_type": "gpt",
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "hidden_size": 768,
            "dtype": "float32",
        },
        {"pytorch_model-00001-of-00002.bin": 700, "pytorch_model-00002-of-00002.bin": 300},
        ModelShape(1000, 12, 12, 12, 64, 2048, 4),
    ),
    "multimodal-text-config": (
        {
            "model_type": "llava",
            "torch_dtype": "bfloat16",
            "text_config": {**LLAMA_CONFIG, "head_dim": 96, "max_position_embeddings": 131072},
        },
        {"model.safetensors": 500},
        ModelShape(500, 32, 32, 8, 96, 131072, 2),
    ),
}


@pytest.mark.parametrize(("config", "weights", "expected"), FOLDERS.values(), ids=FOLDERS)
def test_shape_from_folder(
    tmp_path: Path, config: dict, weights: dict[str, int], expected: ModelShape
) -> None:
    assert ModelShape.from_folder(write_model(tmp_path / "m", config, weights)) == expected


# id: (config.json, weight files, fragment of the ModelError)
BAD_FOLDERS = {
    "missing-layers": (
        {k: v for k, v in LLAMA_CONFIG.items() if k != "num_hidden_layers"},
        {"model.safetensors": 10},
        "config.json has no num_hidden_layers",
    ),
    "missing-hidden-size-and-head-dim": (
        {k: v for k, v in LLAMA_CONFIG.items() if k != "hidden_size"},
        {"model.safetensors": 10},
        "config.json has no hidden_size",
    ),
    "heads-not-a-number": (
        {**LLAMA_CONFIG, "num_attention_heads": "32"},
        {"model.safetensors": 10},
        "num_attention_heads is '32', expected a positive whole number",
    ),
    "no-weights": (LLAMA_CONFIG, {}, "has no weight files"),
}


@pytest.mark.parametrize(("config", "weights", "fragment"), BAD_FOLDERS.values(), ids=BAD_FOLDERS)
def test_shape_from_bad_folder(
    tmp_path: Path, config: dict, weights: dict[str, int], fragment: str
) -> None:
    folder = write_model(tmp_path / "m", config, weights)
    with pytest.raises(ModelError) as caught:
        ModelShape.from_folder(folder)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_shape_from_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"has no config\.json"):
        ModelShape.from_folder(tmp_path)


BUILTIN_FOLDERS = [
    Path.home() / ".sage" / "models" / "smollm2-135m-instruct",
    Path(__file__).resolve().parent.parent / ".cache" / "models" / "smollm2-135m-instruct",
]


def test_shape_of_the_real_builtin_model() -> None:
    folder = next((f for f in BUILTIN_FOLDERS if (f / "config.json").is_file()), None)
    if folder is None:
        pytest.skip("the built-in model has not been converted on this machine")
    shape = ModelShape.from_folder(folder)
    assert dataclasses.replace(shape, weight_bytes=0) == dataclasses.replace(
        SMOL_135M, weight_bytes=0
    )
    assert 250_000_000 < shape.weight_bytes < 300_000_000
    plan = plan_engine(shape, cpu(24))
    assert plan.max_model_len == 8192
    assert_plan_fits(shape, cpu(24), plan)
