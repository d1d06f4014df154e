"""Which inference engine to build: vLLM where it is installed, else transformers + peft."""

from __future__ import annotations

import importlib.util

from sage_tui.core.engines.base import Engine, EngineConfig
from sage_tui.errors import SageError


def default_engine_factory(kind: str, config: EngineConfig) -> Engine:
    """Build the engine of `kind` ("vllm" or "transformers")."""
    if kind == "vllm":
        from sage_tui.core.engines.vllm_engine import VllmEngine

        return VllmEngine(config)
    from sage_tui.core.engines.hf_engine import TransformersEngine

    return TransformersEngine(config)


def resolve_engine_kind(requested: str) -> str:
    """ "auto" means vLLM where it is installed, else transformers."""
    if requested == "auto":
        return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"
    if requested == "vllm" and importlib.util.find_spec("vllm") is None:
        raise SageError("--engine vllm asked for, but vLLM is not installed here")
    return requested
