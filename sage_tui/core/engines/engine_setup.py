"""What an engine is started with: the base model's folder checked, and the plan for this
hardware turned into the engine's config."""

from __future__ import annotations

from pathlib import Path

from sage_tui.core.engines.base import EngineConfig
from sage_tui.core.engines.plan import EnginePlan, Hardware, ModelShape, plan_engine
from sage_tui.core.models.registry import remote_code_allowed
from sage_tui.core.store import ModelRecord
from sage_tui.errors import ModelError


def check_folder(record: ModelRecord) -> None:
    """ModelError when the model's folder is gone (deleted or moved after it was registered)."""
    if not Path(record.path).is_dir():
        raise ModelError(
            f"the folder of {record.name} ({record.path}) no longer exists:"
            " re-import it or remove it on the Models screen"
        )


def planned_config(
    base: ModelRecord,
    shape: ModelShape,
    hardware: Hardware,
    *,
    adapters_rank: int,
    max_model_len: int | None,
) -> tuple[EnginePlan, EngineConfig]:
    """The plan for serving `base` on `hardware`, and the engine config that carries it out."""
    plan = plan_engine(shape, hardware, max_adapter_rank=adapters_rank, max_model_len=max_model_len)
    config = EngineConfig(
        model_name=base.name,
        model_path=base.path,
        max_model_len=plan.max_model_len,
        max_lora_rank=plan.max_lora_rank,
        max_loras=plan.max_loras,
        tensor_parallel_size=plan.tensor_parallel_size,
        gpu_memory_utilization=plan.gpu_memory_utilization,
        cpu_kv_cache_gib=plan.cpu_kv_cache_gib,
        gpu_indices=plan.gpu_indices,
        cuda_visible_devices=hardware.child_value(plan.gpu_indices),
        # Only a base model the user registered with --trust-remote-code; an adapter is
        # served on its base, so it follows the base model's record.
        trust_remote_code=remote_code_allowed(base),
    )
    return plan, config
