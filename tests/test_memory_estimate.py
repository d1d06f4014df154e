"""The training memory estimate: parts against hand computations and public figures, the fit
rule the studio and the queue share."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_tui.core.training.memory_estimate import (
    GIB,
    TrainingShape,
    estimate_training_memory,
    lora_parameters,
)
from sage_tui.core.training.memory_fit import GpuRoom, judge_fit, training_shape

QWEN25_7B = TrainingShape(
    num_layers=28,
    hidden_size=3584,
    intermediate_size=18944,
    num_attention_heads=28,
    num_kv_heads=4,
    head_dim=128,
    vocab_size=152064,
    attention_bias=True,
)
LLAMA3_8B = TrainingShape(
    num_layers=32,
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_kv_heads=8,
    head_dim=128,
    vocab_size=128256,
)


@pytest.mark.parametrize(
    ("shape", "parameters", "lora_r16"),
    [
        # Model cards: 7.62B and 8.03B; PEFT's print_trainable_parameters for r=16 all-linear.
        (QWEN25_7B, 7.62e9, 40_370_176),
        (LLAMA3_8B, 8.03e9, 41_943_040),
    ],
)
def test_parameters_match_public_figures(shape, parameters, lora_r16):
    assert shape.parameter_count == pytest.approx(parameters, rel=0.005)
    assert lora_parameters(shape, 16, "all-linear") == lora_r16
    assert lora_parameters(shape, 32, "all-linear") == 2 * lora_r16


def test_builtin_model_shape_and_parts(builtin_model_dir: Path):
    shape = training_shape(builtin_model_dir)
    assert (shape.num_layers, shape.hidden_size, shape.vocab_size) == (30, 576, 49152)
    assert shape.tie_word_embeddings and shape.dtype_bytes == 2
    # Counted from the headers, and the same figure computed from config.json alone.
    assert shape.parameter_count == 134_515_008
    assert TrainingShape(**{**vars(shape), "parameters": None}).parameter_count == 134_515_008
    memory = estimate_training_memory(
        shape, lora_rank=16, batch_size=2, max_length=512, gradient_checkpointing=False
    )
    tokens = 2 * 512
    assert memory.trainable == 30 * 16 * (4 * 576 + 2 * 192 + 2 * 576 + 3 * (576 + 1536))
    assert memory.weights == 134_515_008 * 2
    assert memory.lora == memory.trainable * 16
    a = 4 * 576 + 2 * 576 + 2 * 192 + 4 * 1536
    assert memory.activations == 30 * tokens * a * 2
    assert memory.logits == tokens * 49152 * 4
    assert memory.total == sum(
        (memory.weights, memory.lora, memory.activations, memory.logits, memory.overhead)
    )


@pytest.mark.parametrize("shape", [QWEN25_7B, LLAMA3_8B])
@pytest.mark.parametrize(("batch", "length"), [(1, 512), (4, 1024), (8, 2048)])
def test_checkpointing_lowers_activations_only(shape, batch, length):
    def run(checkpointing):
        return estimate_training_memory(
            shape,
            lora_rank=16,
            batch_size=batch,
            max_length=length,
            gradient_checkpointing=checkpointing,
        )

    full, saved = run(False), run(True)
    assert saved.activations < full.activations / 5
    assert (saved.weights, saved.lora, saved.logits) == (full.weights, full.lora, full.logits)
    # With checkpointing: each layer's input plus one layer recomputed.
    tokens = batch * length
    assert saved.activations == tokens * 2 * (
        shape.num_layers * shape.hidden_size + shape.activation_values
    )


@pytest.mark.parametrize(
    ("shape", "low", "high"),
    [
        # 7-8B in bf16 with LoRA, batch 4 x 1024 and checkpointing: ~15 GiB weights and
        # ~20-25 GiB in all (the figures Unsloth / LLaMA-Factory users report on 24 GiB cards).
        (QWEN25_7B, 17, 26),
        (LLAMA3_8B, 17, 26),
    ],
)
def test_seven_billion_totals_are_plausible(shape, low, high):
    memory = estimate_training_memory(
        shape, lora_rank=16, batch_size=4, max_length=1024, gradient_checkpointing=True
    )
    assert 14 * GIB < memory.weights < 16 * GIB
    assert low * GIB < memory.total < high * GIB


def test_target_list_counts_only_named_linears():
    attention = lora_parameters(LLAMA3_8B, 8, ["q_proj", "v_proj"])
    assert attention == 32 * 8 * ((4096 + 4096) + (4096 + 1024))
    assert lora_parameters(LLAMA3_8B, 8, ["lm_head"]) == 0


def _memory(gib_total: float, checkpointing: bool = False):
    base = estimate_training_memory(
        LLAMA3_8B, lora_rank=16, batch_size=1, max_length=64, gradient_checkpointing=checkpointing
    )
    return type(base)(
        weights=int(gib_total * GIB) - base.lora - base.activations - base.logits - base.overhead,
        lora=base.lora,
        activations=base.activations,
        logits=base.logits,
        overhead=base.overhead,
        trainable=base.trainable,
        gradient_checkpointing=checkpointing,
    )


@pytest.mark.parametrize(
    ("gpus", "pinned", "outcome", "words"),
    [
        ([GpuRoom(0, 30 * GIB, 40 * GIB)], (), "fits", "GPU 0 has 30.0 GiB free"),
        ([GpuRoom(0, 12 * GIB, 24 * GIB)], (), "wait", "GPU 0 has 12.0 GiB free"),
        ([GpuRoom(0, 12 * GIB, 16 * GIB)], (), "refusal", "GPU 0, has 16.0 GiB in all"),
        # Pinned: the pinned GPU decides, even when another has room.
        (
            [GpuRoom(0, 40 * GIB, 80 * GIB), GpuRoom(1, 12 * GIB, 16 * GIB)],
            (1,),
            "refusal",
            "GPU 1 has 16.0 GiB in all",
        ),
        # DDP: every pinned GPU holds a replica.
        (
            [GpuRoom(0, 40 * GIB, 80 * GIB), GpuRoom(1, 12 * GIB, 24 * GIB)],
            (0, 1),
            "wait",
            "GPU 1 has 12.0 GiB free",
        ),
        ([GpuRoom(0, 40 * GIB, 80 * GIB), GpuRoom(1, 30 * GIB, 40 * GIB)], (0, 1), "fits", ""),
    ],
)
def test_fit_rule(gpus, pinned, outcome, words):
    verdict = judge_fit(_memory(21.3), gpus, pinned)
    found = {"refusal": verdict.refusal, "wait": verdict.wait}
    if outcome == "fits":
        assert verdict.refusal is None and verdict.wait is None
    else:
        assert found[outcome] is not None and words in found[outcome]
        assert "needs ~21.3 GiB (weights" in found[outcome]
        assert [k for k, v in found.items() if v] == [outcome]
    assert verdict.line.startswith("memory: ~21.3 GiB (weights ")
    assert words in verdict.line or outcome == "refusal"


def test_refusal_advice_names_checkpointing_only_when_off():
    gpus = [GpuRoom(0, 8 * GIB, 8 * GIB)]
    assert "gradient checkpointing" in judge_fit(_memory(21.3), gpus).refusal
    assert "gradient checkpointing" not in judge_fit(_memory(21.3, True), gpus).refusal


@pytest.mark.parametrize(
    ("free", "total", "outcome"),
    [(64, 128, None), (16, 128, "warning"), (4, 16, "refusal")],
)
def test_cpu_host_compares_with_ram(free, total, outcome):
    verdict = judge_fit(_memory(21.3), [], ram_free=free * GIB, ram_total=total * GIB)
    assert verdict.wait is None
    assert (verdict.warning is not None) == (outcome == "warning")
    assert (verdict.refusal is not None) == (outcome == "refusal")
    assert verdict.line.endswith(f"{free}.0 GiB RAM free")


def test_queue_holds_a_job_its_gpu_cannot_hold_now_and_says_why(
    supervisors, spec_for, modes, builtin_model_dir: Path
) -> None:
    from sage_tui.core.training.placement import Device

    gpus = [Device(0, GIB // 2)]
    sup = supervisors(gpus=gpus)
    spec = spec_for("big").with_changes(base_path=str(builtin_model_dir))
    job = sup.submit(spec)
    assert job.status == "queued"
    assert job.error.startswith("waits for memory: needs ~")
    assert "GPU 0 has 0.5 GiB free" in job.error
    # A job whose base model's shape cannot be read is placed as before.
    modes["small"] = "hang"
    assert sup.submit(spec_for("small").with_changes(gpus=[0])).status == "running"
    sup.cancel("small", grace_seconds=10)
    gpus[0] = Device(0, 40 * GIB)  # the memory came back
    sup.poll()
    assert sup.get("big").status == "running"
    assert sup.get("big").error is None


def _one_gpu(free: float, total: float):
    from sage_tui.core.gpu import GpuSample, ResourceSnapshot

    gpu = GpuSample(
        0, "test GPU", int((total - free) * GIB), int(total * GIB), int(free * GIB), 0, ()
    )
    return ResourceSnapshot((gpu,), None, 0.0, 2, 4 * GIB, 24 * GIB, 0.0)


@pytest.mark.parametrize(
    ("free", "total", "outcome"),
    [(40, 80, "fits"), (0.5, 80, "waits"), (0.5, 1, "refused")],
)
def test_prepare_refuses_a_job_no_gpu_could_hold(provisioned_services, free, total, outcome):
    from sage_tui.core.training.spec import SpecError
    from sage_tui.studio import Studio
    from sage_tui.studio.jobs import JobRequest
    from tests.conftest import BUILTIN, REPO, FakeMonitor

    provisioned_services.monitor = FakeMonitor(_one_gpu(free, total))
    request = JobRequest(
        base=BUILTIN, dataset=REPO / "sample_data" / "sage_tui_facts.jsonl", preset="small-gpu"
    )
    jobs = Studio(provisioned_services).jobs
    if outcome == "refused":
        with pytest.raises(
            SpecError,
            match=r"cannot fit: needs ~\d+\.\d GiB \(weights .*"
            r"GPU 0, has 1\.0 GiB in all: lower batch size or max length",
        ):
            jobs.prepare(request)
        return
    fit = jobs.prepare(request).fit
    assert fit.line.startswith("memory: ~")
    assert fit.line.endswith(f"GPU 0 has {free:.1f} GiB free")
    assert fit.memory.gradient_checkpointing  # the runner turns it on with a GPU
    assert (fit.wait is not None) == (outcome == "waits")


async def test_the_form_shows_the_estimate_and_follows_the_batch_size(provisioned_services):
    from textual.widgets import Input, Label

    from sage_tui.ui.app import SageApp
    from tests.support.waiting import until
    from tests.test_finetune_screen import open_finetune

    app = SageApp(provisioned_services)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_finetune(app, pilot)
        label = app.screen.query_one("#finetune-memory", Label)

        def shown() -> str:
            return str(label.render())

        await until(lambda: shown().startswith("memory: ~"))
        assert shown().endswith("GiB RAM free")
        before = shown()
        app.screen.query_one("#finetune-batch", Input).value = "64"
        await until(lambda: shown() != before and shown().startswith("memory: ~"))
        assert float(shown().split("~")[1].split()[0]) > float(before.split("~")[1].split()[0])
