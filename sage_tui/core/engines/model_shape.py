"""The shape of a model as the engine planner needs it, read from the model's folder.

:class:`ModelShape` holds the few figures that decide how much memory a served model takes:
weight bytes, layers, attention and KV heads, head width, context limit and bytes per value.
:meth:`ModelShape.from_folder` reads them from a Hugging Face ``config.json`` and the sizes of the
weight files, without loading the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_tui.core.models.folder import read_json_object
from sage_tui.errors import ModelError

__all__ = ["ModelShape"]


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
