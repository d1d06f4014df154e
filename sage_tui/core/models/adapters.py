"""LoRA adapter folders: what they hold, and whether vLLM can serve them.

vLLM serves plain LoRA only: it rejects DoRA, `modules_to_save` and trained biases, and its
`max_lora_rank` must cover the adapter's rank. An adapter that fails these checks is refused at
registration with the reason, not when a user first chats with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sage_tui.core.models.folder import read_json_object
from sage_tui.errors import ModelError

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class AdapterInfo:
    """The facts about an adapter folder that serving needs."""

    path: Path
    rank: int
    alpha: float
    base_model: str
    """`base_model_name_or_path` as recorded by PEFT at training time."""
    target_modules: tuple[str, ...]
    weights_mtime_ns: int
    """Changes when the adapter is re-trained in place."""


def read_adapter(path: Path) -> AdapterInfo:
    """Read and check an adapter folder; ModelError names what is wrong."""
    if not path.is_dir():
        raise ModelError(f"adapter folder {path} does not exist")
    config_file = path / "adapter_config.json"
    config = read_json_object(config_file, f"{path} is not a LoRA adapter: no adapter_config.json")
    weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        raise ModelError(f"{path} is not a LoRA adapter: no adapter_model.safetensors")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ModelError(f"{config_file}: peft_type {config.get('peft_type')} is not LoRA")
    if config.get("use_dora"):
        raise ModelError(f"{config_file}: DoRA adapters cannot be served by vLLM")
    if config.get("modules_to_save"):
        raise ModelError(
            f"{config_file}: modules_to_save {config['modules_to_save']} cannot be served by vLLM"
        )
    if config.get("bias", "none") != "none":
        raise ModelError(f"{config_file}: bias {config['bias']!r} cannot be served (need 'none')")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise ModelError(f"{config_file}: rank r={rank!r} is not a positive whole number")
    targets = config.get("target_modules") or ()
    if isinstance(targets, str):
        targets = (targets,)
    return AdapterInfo(
        path=path,
        rank=rank,
        alpha=float(config.get("lora_alpha", rank)),
        base_model=str(config.get("base_model_name_or_path") or ""),
        target_modules=tuple(targets),
        weights_mtime_ns=weights.stat().st_mtime_ns,
    )
