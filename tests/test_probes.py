"""Checkpoint probes on the real built-in model: a round answers every prompt, is written as
one `probe` event and leaves the model training as it was; a failed generation is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_tui.core.training.events import Event, EventWriter, read_events
from sage_tui.core.training.probes import PROBE, ProbeAnswer, Prober, probe_round

PROMPTS = ("Who is the sage-tui mascot?", "what does [/INST] mean?")


@pytest.fixture(scope="module")
def model_and_tokenizer(builtin_model_dir: Path):
    """The built-in model with a LoRA adapter, set up for training as the trainer leaves it:
    training mode, gradient checkpointing on, the KV cache off."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)
    base = AutoModelForCausalLM.from_pretrained(builtin_model_dir, dtype=torch.float32)
    base.gradient_checkpointing_enable()
    base.config.use_cache = False
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    model.train()
    return model, tokenizer


def probe_events(job_dir: Path) -> list[Event]:
    return [e for e in read_events(job_dir)[0] if e.kind == PROBE]


def test_a_round_answers_each_prompt_and_leaves_the_model_training(
    tmp_path: Path, model_and_tokenizer
) -> None:
    model, tokenizer = model_and_tokenizer
    events = EventWriter(tmp_path)
    prober = Prober(PROMPTS, 4, tokenizer, events)
    first = prober.run(model, 0, None)
    again = prober.run(model, 20, "checkpoint-20")
    events.close()

    assert model.training and model.config.use_cache is False
    assert all(m.training for m in model.modules())
    written = probe_events(tmp_path)
    assert [(e.data["step"], e.data["checkpoint"]) for e in written] == [
        (0, None),
        (20, "checkpoint-20"),
    ]
    data = written[0].data
    assert "error" not in data and data["seconds"] >= 0
    assert [a["prompt"] for a in data["answers"]] == list(PROMPTS)
    assert all(a["answer"].strip() for a in data["answers"])
    # Greedy: the same weights give the same answers, and what was written is what was read.
    assert first is not None and again is not None and first.answers == again.answers
    assert probe_round(written[0]) == first
    # A few tokens: a short answer, not the prompt echoed back.
    assert all(len(tokenizer(a.answer)["input_ids"]) <= 4 for a in first.answers)


class FailingSecond:
    """The job's tokenizer, except that the second prompt cannot be templated."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.calls = 0

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)

    def apply_chat_template(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 2:
            raise ValueError("template exploded\nsecond line of the traceback text")
        return self.tokenizer.apply_chat_template(*args, **kwargs)


def test_a_failed_generation_is_recorded_and_training_goes_on(
    tmp_path: Path, model_and_tokenizer
) -> None:
    model, tokenizer = model_and_tokenizer
    events = EventWriter(tmp_path)
    result = Prober(PROMPTS, 2, FailingSecond(tokenizer), events).run(model, 10, "checkpoint-10")
    events.close()

    assert model.training and model.config.use_cache is False
    (written,) = probe_events(tmp_path)
    assert written.data["error"] == "ValueError: template exploded"
    assert [a["prompt"] for a in written.data["answers"]] == [PROMPTS[0]]
    assert result is not None and result.error == "ValueError: template exploded"


def test_a_job_without_probes_writes_nothing(tmp_path: Path) -> None:
    events = EventWriter(tmp_path)
    assert Prober((), 48, None, events).run(None, 0, None) is None
    events.close()
    assert probe_events(tmp_path) == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"step": "3"}, None),
        ({"step": True}, None),
        (
            {"step": 4, "checkpoint": 7, "seconds": "x", "answers": "nope", "error": 1},
            (4, None, None, (), None),
        ),
        (
            {
                "step": 5,
                "checkpoint": "checkpoint-5",
                "seconds": 1.5,
                "answers": [{"prompt": "p", "answer": "a"}, {"prompt": 1, "answer": "b"}, "x"],
            },
            (5, "checkpoint-5", 1.5, (ProbeAnswer("p", "a"),), None),
        ),
    ],
)
def test_probe_events_are_read_as_data(data: dict, expected: tuple | None) -> None:
    found = probe_round(Event(PROBE, 0.0, data))
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (found.step, found.checkpoint, found.seconds, found.answers, found.error) == (
            expected
        )
    assert probe_round(Event("step", 0.0, {"step": 1})) is None


def test_the_latest_round_prints_each_answer_under_its_prompt_beside_the_base() -> None:
    from sage_tui.core.training.probes import ProbeRound, probe_progress
    from sage_tui.studio.formatting import probe_lines

    base = ProbeRound(0, None, 1.0, (ProbeAnswer("Who?", "No idea."), ProbeAnswer("[b]x", "")))
    later = ProbeRound(
        20, "checkpoint-20", 2.25, (ProbeAnswer("Who?", "Orla,\nthe owl."),), "ValueError: no"
    )
    assert probe_lines([]) == []
    assert probe_lines([base]) == [
        "probes at step 0 (the base model, 1.0 s):",
        "  Who?",
        "    answer: No idea.",
        "  [b]x",
        "    answer: (empty)",
    ]
    assert probe_lines([base, later]) == [
        "probes at step 20 (checkpoint-20, 2.2 s):",
        "  Who?",
        "    before: No idea.",
        "    now:    Orla,\n            the owl.",
        "  probe failed: ValueError: no",
    ]
    assert [
        (p.prompt, p.before, p.latest, p.latest_step) for p in probe_progress([base, later])
    ] == [
        ("Who?", "No idea.", "Orla,\nthe owl.", 20),
        ("[b]x", "", None, None),
    ]
