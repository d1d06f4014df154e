"""Evaluation: the scores (hand-computed values), the summary of reference losses, an old
evaluation.json read back, a failing reference score on the scripted engine, what
`sage-tui eval` refuses before any engine starts, and (slow) a job trained on facts scored
against its base on real vLLM."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sage_tui.core.scores import METRICS, normalise, rouge_l, score, token_f1, tokens
from sage_tui.core.training.spec import JobSpec
from sage_tui.services import Services
from sage_tui.studio import Studio
from sage_tui.studio.evaluation import EVALUATION_FILE, EvalRow, read_saved, summarise
from tests.conftest import BUILTIN
from tests.support.adapters import SECRET_FACTS, tiny_adapter
from tests.support.fake_engine import FakeEngines, adapter_folder
from tests.test_cli import one_line_error, run


def test_scores_against_hand_computed_values() -> None:
    assert normalise("  The  Code: AZURE-42! ") == "the code azure 42"
    assert score("The code is AZURE-42.", "the code is azure-42") == {
        "exact": 1.0,
        "contains": 1.0,
        "token_f1": 1.0,
        "rouge_l": 1.0,
    }
    # 3 shared of 4 answer and 6 reference tokens: P 3/4, R 1/2, F1 0.6.
    answer, reference = tokens("the code is blue"), tokens("the secret code is azure 42")
    assert token_f1(answer, reference) == pytest.approx(0.6)
    assert rouge_l(answer, reference) == pytest.approx(0.6)  # LCS "the code is": 3
    assert rouge_l(tokens("b a"), tokens("a b")) == pytest.approx(0.5)  # order counts
    assert token_f1(tokens("b a"), tokens("a b")) == 1.0  # bag of words does not
    assert score("It is AZURE-42, I think", "AZURE-42")["contains"] == 1.0
    assert score("", "AZURE-42") == {"exact": 0.0, "contains": 0.0, "token_f1": 0.0, "rouge_l": 0.0}
    assert tokens("北京是首都") == ["北", "京", "是", "首", "都"]  # no spaces: by character


def row(line: int, losses: dict[str, float], tokens: dict[str, int], **fields) -> EvalRow:
    scores = {model: dict.fromkeys(METRICS, 0.5) for model in losses}
    return EvalRow(line, "q", "a", {}, scores, {}, losses=losses, reference_tokens=tokens, **fields)


def test_the_summary_weighs_each_reference_token_once() -> None:
    rows = [
        row(1, {"base": 2.0, "tuned": 1.0}, {"base": 3, "tuned": 3}),
        row(2, {"base": 4.0, "tuned": 0.5}, {"base": 1, "tuned": 1}),
        # The tuned model's reference could not be scored on this row: it does not count.
        row(3, {"base": 1.0}, {"base": 4}, loss_errors={"tuned": "engine stopped"}),
    ]
    summary = summarise(["base", "tuned"], rows)
    # (2*3 + 4*1 + 1*4) / 8 tokens, not the mean of the rows' losses (7/3).
    assert summary["base"]["loss"] == pytest.approx(14 / 8)
    assert summary["base"]["perplexity"] == pytest.approx(math.exp(14 / 8))
    assert summary["tuned"]["loss"] == pytest.approx((1.0 * 3 + 0.5) / 4)
    # The answer's scores first, then the reference's: the order the panel and table show.
    assert list(summary["base"]) == [*METRICS, "loss", "perplexity"]
    assert summarise(["base"], [row(1, {}, {})]) == {"base": {}}


def test_an_evaluation_saved_before_reference_losses_reads_back(tmp_path: Path) -> None:
    old_row = {
        "line": 2,
        "prompt": "Who built sage-tui?",
        "reference": "The Lighthouse team.",
        "answers": {"base": "Nobody.", "tuned": "The Lighthouse team."},
        "scores": {"base": dict.fromkeys(METRICS, 0.0), "tuned": dict.fromkeys(METRICS, 1.0)},
        "errors": {},
    }
    summary = {"base": dict.fromkeys(METRICS, 0.0), "tuned": dict.fromkeys(METRICS, 1.0)}
    saved = {"models": ["base", "tuned"], "source": "facts.jsonl", "held_out": True}
    saved |= {"rows": [old_row], "summary": summary, "seconds": 3.5}
    (tmp_path / EVALUATION_FILE).write_text(json.dumps(saved))
    evaluation = read_saved(tmp_path)
    assert evaluation.summary == summary and "loss" not in evaluation.summary["base"]
    assert evaluation.rows[0].losses == {} and evaluation.rows[0].loss_errors == {}
    assert summarise(evaluation.models, evaluation.rows) == summary


async def test_a_reference_that_cannot_be_scored_keeps_the_rest(
    provisioned_services: Services, engines: FakeEngines, tmp_path: Path
) -> None:
    """Scripted engine: the adapter's scoring fails on every row; its answers, its text
    scores and the base's losses stay, and each row says why the adapter has no loss."""
    provisioned_services.registry.register_adapter(
        "secret", adapter_folder(tmp_path / "secret"), BUILTIN
    )
    engines.script.failing_scores = {"secret"}
    studio = Studio(provisioned_services)
    try:
        result = await studio.evaluation.evaluate(
            models=[BUILTIN, "secret"], data=str(facts_file(tmp_path))
        )
    finally:
        await studio.shutdown()
    assert len(result.rows) == len(SECRET_FACTS)
    for one in result.rows:
        assert one.loss_errors == {"secret": "scoring the reference failed: scripted"}
        assert one.losses == {BUILTIN: 2.0} and one.perplexities[BUILTIN] == pytest.approx(
            math.exp(2.0)
        )
        assert one.reference_tokens[BUILTIN] == len(one.reference.split()) + 1
        assert set(one.scores) == {BUILTIN, "secret"} and one.errors == {}
    assert result.summary[BUILTIN]["loss"] == pytest.approx(2.0)
    assert "loss" not in result.summary["secret"] and "token_f1" in result.summary["secret"]
    assert engines.script.scored.count("secret") == len(SECRET_FACTS)


def completed_job(services: Services, task_id: str, dataset: Path, adapter: Path | None, **spec):
    """A completed job's row and folder, as a finished run leaves them."""
    folder = services.settings.paths.job_dir(task_id)
    folder.mkdir(parents=True)
    if adapter is not None:
        for file in adapter.iterdir():
            if file.is_file():
                shutil.copy(file, folder / file.name)
    model = services.registry.get(BUILTIN)
    job_spec = JobSpec(task_id, BUILTIN, str(model.path), str(dataset), **spec)
    now = time.time()
    with services.store.transaction() as db:
        db.execute(
            "INSERT INTO jobs (id, base_model, dataset, status, spec, output_dir, created_at,"
            " started_at, finished_at) VALUES (?, ?, ?, 'completed', ?, ?, ?, ?, ?)",
            (task_id, BUILTIN, str(dataset), job_spec.to_json(), str(folder), now, now, now),
        )


def facts_file(folder: Path) -> Path:
    path = folder / "facts.jsonl"
    rows = [{"instruction": q, "output": a} for q, a in SECRET_FACTS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_what_cannot_be_evaluated_is_refused_before_the_engine_starts(
    capsys, provisioned_services: Services, tmp_path: Path
) -> None:
    home = str(provisioned_services.settings.home)
    facts = facts_file(tmp_path)
    stub = tiny_adapter_stub(tmp_path)
    provisioned_services.registry.register_adapter("secret", stub, BUILTIN)
    completed_job(provisioned_services, "nothing-held", facts, stub)
    completed_job(provisioned_services, "no-adapter", facts, None)
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}\n')
    (tmp_path / "plain.jsonl").write_text('{"text": "just some text"}\n')
    cases = [
        ([], "name a job, or the models to evaluate (--models A,B)"),
        (["--models", f"{BUILTIN},{BUILTIN}"], "is chosen twice"),
        (["--models", f"{BUILTIN},x"], "no model named 'x' is registered"),
        (["--models", f"{BUILTIN},{BUILTIN}x"], "no model named"),
        (["--models", f"{BUILTIN},secret"], "name the rows to evaluate on (--data FILE)"),
        (["nothing-held", "--max-rows", "0"], "--max-rows must be at least 1, got 0"),
        (["nothing-held"], "job nothing-held held no rows out (eval fraction 0.0)"),
        (["no-adapter", "--data", str(facts)], "job no-adapter has no adapter in"),
        (["no-such-job", "--data", str(facts)], "no-such-job"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, "--home", home, "eval", *argv)
        assert code == 2 and out == "", (argv, err)
        assert message in one_line_error(err), (argv, err)
    for name, message in [("pairs.jsonl", "preference"), ("plain.jsonl", "no row ends in a reply")]:
        argv = ["eval", "--models", f"{BUILTIN},secret", "--data", str(tmp_path / name)]
        code, out, err = run(capsys, "--home", home, *argv)
        assert code == 2 and message in err.lower(), err


def tiny_adapter_stub(folder: Path) -> Path:
    """An adapter folder registration accepts (config only): enough for refusals, which never
    load it."""
    adapter = folder / "adapter"
    adapter.mkdir()
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    return adapter


@pytest.mark.slow
def test_eval_scores_a_job_trained_on_facts_above_its_base(
    provisioned_services: Services, builtin_model_dir: Path, tmp_path: Path
) -> None:
    """`sage-tui eval JOB --data FACTS` on real vLLM: the base and the job's adapter answer
    every row at once; the adapter, which learnt the facts, scores above the base, finds the
    references far likelier (lower loss and perplexity on every row), and the evaluation is
    kept in the job's folder."""
    facts = facts_file(tmp_path)
    completed_job(provisioned_services, "facts", facts, tiny_adapter(builtin_model_dir, rank=8))
    home = str(provisioned_services.settings.home)
    command = [sys.executable, "-m", "sage_tui", "--home", home, "eval", "facts"]
    done = subprocess.run(
        [*command, "--data", str(facts), "--max-tokens", "24", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    base, tuned = result["models"]
    assert (base, tuned) == (BUILTIN, "sage-finetuned-facts")
    assert len(result["rows"]) == len(SECRET_FACTS) and not result["held_out"]
    summary = result["summary"]
    assert summary[tuned]["token_f1"] > summary[base]["token_f1"] + 0.3, summary
    assert summary[tuned]["contains"] > summary[base]["contains"], summary
    assert summary[tuned]["loss"] < 0.5 < 1.0 < summary[base]["loss"], summary
    assert summary[tuned]["perplexity"] == pytest.approx(math.exp(summary[tuned]["loss"]))
    assert summary[tuned]["perplexity"] < summary[base]["perplexity"]
    for one in result["rows"]:
        assert one["losses"][tuned] < one["losses"][base] and not one["loss_errors"], one
        assert one["reference_tokens"][tuned] == one["reference_tokens"][base] > 3
    row = result["rows"][0]
    assert row["reference"] == SECRET_FACTS[0][1] and "AZURE-42" in row["answers"][tuned]
    kept = provisioned_services.settings.paths.job_dir("facts") / "evaluation.json"
    assert json.loads(kept.read_text())["summary"] == summary
