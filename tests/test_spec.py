"""Job specs: range checks that keep adapters servable by vLLM, presets by hardware."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_tui.core.training.spec import PRESETS, JobSpec, SpecError, preset_for

GIB = 1024**3


@pytest.fixture
def spec(tmp_path: Path) -> JobSpec:
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    return JobSpec(task_id="job-1", base_model="m", base_path=str(tmp_path), dataset=str(data))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task_id": "bad id!"}, "task id 'bad id!' must be letters"),
        ({"lora_r": 12}, "LoRA rank 12 is not one vLLM serves"),
        ({"lora_alpha": 0}, "LoRA alpha 0 must be positive"),
        ({"lora_dropout": 1.0}, "LoRA dropout 1.0 must be in [0, 1)"),
        ({"learning_rate": 0.5}, "learning rate 0.5 must be in (0, 0.1]"),
        ({"epochs": 0, "max_steps": -1}, "epochs must be positive"),
        ({"batch_size": 0}, "batch size 0 must be at least 1"),
        ({"grad_accum": 0}, "gradient accumulation 0 must be at least 1"),
        ({"max_length": 8}, "max length 8 must be in 32..131072"),
        ({"eval_fraction": 0.9}, "eval fraction 0.9 must be in 0..0.5"),
        ({"save_steps": 0}, "checkpoint interval 0 must be at least 1"),
        ({"lr_scheduler": "wild"}, "scheduler 'wild' must be constant, linear or cosine"),
        ({"placeholders": {"my name": "Sage"}}, "placeholder name 'my name' must be letters"),
        ({"placeholders": {"1st": "Sage"}}, "placeholder name '1st' must be letters"),
        ({"placeholders": {"name": " "}}, "placeholder {{name}} needs a value"),
        ({"train_on_prompts": "yes"}, "train_on_prompts 'yes' must be true or false"),
        ({"strip_special_tokens": 1}, "strip_special_tokens 1 must be true or false"),
        ({"columns": {"output": ""}}, "columns {'output': ''} must map names"),
        ({"probes": ("ok", " ")}, "probe prompt 2 is empty"),
        ({"probes": ("x" * 501,)}, "probe prompt 1 has 501 characters: at most 500"),
        ({"probes": tuple("abcdef")}, "6 probe prompts: at most 5"),
        ({"probes": "one prompt"}, "probes 'one prompt' must be a list of prompts"),
        ({"probes": (1,)}, "probes (1,) must be a list of prompts"),
        ({"probe_max_tokens": 0}, "probe max tokens 0 must be in 1..512"),
        ({"probe_max_tokens": 513}, "probe max tokens 513 must be in 1..512"),
        ({"probe_max_tokens": True}, "probe max tokens True must be in 1..512"),
        ({"dataset": "/nonexistent/data.jsonl"}, "dataset /nonexistent/data.jsonl does not exist"),
        (
            {"base_path": "/nonexistent/model"},
            "base model folder /nonexistent/model does not exist",
        ),
    ],
)
def test_out_of_range_values_are_named(spec: JobSpec, changes: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        spec.with_changes(**changes).check()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_defaults_are_valid_and_round_trip(spec: JobSpec, tmp_path: Path) -> None:
    spec.check()
    assert spec.target_modules == "all-linear" and spec.lora_r == 16 and spec.placeholders == {}
    spec = spec.with_changes(placeholders={"name": "Sage", "author": "the SAGE team"}).check()
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    assert JobSpec.from_file(path) == spec
    path.write_text(spec.to_json().replace('"seed"', '"sneed"'))
    with pytest.raises(SpecError, match="unknown settings sneed"):
        JobSpec.from_file(path)


def test_masking_settings_round_trip_and_an_old_spec_loads_with_their_defaults(
    spec: JobSpec, tmp_path: Path
) -> None:
    assert (spec.train_on_prompts, spec.strip_special_tokens, spec.columns) == (False, False, {})
    changed = spec.with_changes(
        train_on_prompts=True, strip_special_tokens=True, columns={"output": "answer"}
    ).check()
    path = tmp_path / "spec.json"
    path.write_text(changed.to_json())
    assert JobSpec.from_file(path) == changed
    old = json.loads(spec.to_json())
    for name in ("train_on_prompts", "strip_special_tokens", "columns"):
        del old[name]
    path.write_text(json.dumps(old))
    assert JobSpec.from_file(path) == spec


def test_probes_round_trip_and_an_old_spec_loads_without_them(
    spec: JobSpec, tmp_path: Path
) -> None:
    assert (spec.probes, spec.probe_max_tokens) == ((), 48)
    changed = spec.with_changes(probes=("Who is Orla?", "what does [/INST] mean?")).check()
    path = tmp_path / "spec.json"
    path.write_text(changed.to_json())
    assert json.loads(path.read_text())["probes"] == ["Who is Orla?", "what does [/INST] mean?"]
    assert JobSpec.from_file(path) == changed
    old = json.loads(spec.to_json())
    del old["probes"], old["probe_max_tokens"]
    path.write_text(json.dumps(old))
    assert JobSpec.from_file(path) == spec
    # A list (as JSON and the CLI give it) is kept as a tuple.
    assert spec.with_changes(probes=["a", "b"]).probes == ("a", "b")


@pytest.mark.parametrize(
    ("free", "preset"),
    [([], "cpu"), ([12 * GIB], "small-gpu"), ([20 * GIB, 70 * GIB], "large-gpu")],
)
def test_preset_by_hardware(free: list[int], preset: str, spec: JobSpec) -> None:
    chosen = preset_for(free)
    assert chosen.name == preset
    spec.with_changes(**chosen.values).check()  # every preset is a valid spec
    assert set(PRESETS) == {"cpu", "small-gpu", "large-gpu"}
