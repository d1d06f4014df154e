"""`sage-tui data check` and `data from-docs`, and the studio's dataset desk behind them and the
Finetune form: the real built-in model's tokenizer and chat template, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_tui.cli import main
from sage_tui.core.data import load_dataset_file
from sage_tui.core.data.docs import doc_sections, topic_words
from sage_tui.services import Services
from sage_tui.studio import Studio
from sage_tui.studio.jobs import JobRequest
from tests.conftest import BUILTIN, REPO

SHARED = REPO.parent / "shared" / "datasets"
DOCS = REPO / "sample_data" / "docs"


def shared(name: str) -> Path:
    """One of the real public files beside the repository (skipped where they are not)."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def check(capsys, services: Services, *argv: str) -> tuple[int, list[str]]:
    home = str(services.settings.home)
    code, out, err = run(capsys, "--home", home, "data", "check", *argv)
    assert not err, err
    return code, out.rstrip("\n").split("\n")


def test_check_of_a_real_alpaca_file_can_train(capsys, provisioned_services: Services) -> None:
    code, lines = check(capsys, provisioned_services, str(shared("alpaca_en_demo.json")))
    assert code == 0
    assert lines[0] == "999 rows of 999 usable, format alpaca"
    assert lines[-1] == "can train: 999 rows"
    loss = next(line for line in lines if line.startswith("loss: "))
    assert "carry loss" in loss and "are masked" in loss
    # Piped, the trained tokens of the first row are marked; the reply is among them, the
    # user's instruction is not.
    marked = lines[
        lines.index(
            "first row as the model sees it, the tokens that carry loss between \u27e6 \u27e7:"
        )
        + 1 :
    ]
    text = "\n".join(marked[:-1])
    first = load_dataset_file(shared("alpaca_en_demo.json"), keep=1).examples[0]
    reply = first.messages[-1]["content"]
    assert "\u27e6" in text and reply.split()[0] in text.split("\u27e6", 1)[1]
    assert first.messages[-2]["content"][:20] in text.split("\u27e6", 1)[0]


def test_check_refuses_what_start_refuses(capsys, provisioned_services: Services, tmp_path) -> None:
    data = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"instruction": "Say hi", "output": "hi", "chosen": "hi", "rejected": "go away"}] * 3,
    )
    code, lines = check(capsys, provisioned_services, str(data))
    assert code == 2
    assert lines[-1].startswith("cannot train: ") and "preference" in lines[-1]
    home = str(provisioned_services.settings.home)
    code, _, err = run(capsys, "--home", home, "finetune", "--base", BUILTIN, "--data", str(data))
    assert code == 2 and "preference" in err
    assert not provisioned_services.supervisor.list()


def test_tool_rows_need_a_template_that_renders_tools(
    capsys, provisioned_services: Services
) -> None:
    code, lines = check(capsys, provisioned_services, str(shared("glaive_toolcall_en_demo.json")))
    assert code == 2
    assert lines[-1].startswith("cannot train: ") and "tool" in lines[-1]


def test_invalid_rows_refuse_unless_skipped(
    capsys, provisioned_services: Services, tmp_path
) -> None:
    data = write_jsonl(
        tmp_path / "data.jsonl",
        [{"instruction": "Say hi", "output": "hi"}, {"instruction": "Say bye"}],
    )
    code, lines = check(capsys, provisioned_services, str(data))
    assert code == 2
    assert any(line.startswith("problem: line 2: ") for line in lines)
    assert lines[-1].startswith("cannot train: 1 of 2 rows are invalid")
    code, lines = check(capsys, provisioned_services, str(data), "--skip-invalid")
    assert (code, lines[-1]) == (0, "can train: 1 rows")


def test_column_mapping(capsys, provisioned_services: Services, tmp_path) -> None:
    data = write_jsonl(
        tmp_path / "qa.jsonl",
        [{"question": f"What is {n} + {n}?", "answer": str(2 * n)} for n in range(5)],
    )
    code, lines = check(capsys, provisioned_services, str(data))
    assert code == 2 and "cannot tell the format" in lines[-1]
    code, lines = check(
        capsys, provisioned_services, str(data), "--columns", "instruction=question,output=answer"
    )
    assert (code, lines[-1]) == (0, "can train: 5 rows")


def test_train_on_prompts_trains_every_token(capsys, provisioned_services: Services) -> None:
    data = str(shared("identity.json"))
    _, masked = check(
        capsys, provisioned_services, data, "--fill", "name=Sage", "--fill", "author=Us"
    )
    _, full = check(
        capsys, provisioned_services, data, "--fill", "name=Sage", "--fill", "author=Us",
        "--train-on-prompts",
    )  # fmt: skip
    masked_line = next(line for line in masked if line.startswith("loss: "))
    full_line = next(line for line in full if line.startswith("loss: "))
    assert "(100%)" in full_line and "(100%)" not in masked_line


def test_an_unknown_dataset_is_one_line(capsys, provisioned_services: Services) -> None:
    code, lines = check(capsys, provisioned_services, "nobody/no-such-dataset")
    assert code == 2
    assert lines[-1].startswith("cannot train: ") and "nobody/no-such-dataset" in lines[-1]


def test_from_docs_writes_a_dataset_that_checks(capsys, settings, tmp_path) -> None:
    out = tmp_path / "docs.jsonl"
    code, stdout, err = run(
        capsys, "--home", str(settings.home), "data", "from-docs", str(DOCS), "-o", str(out)
    )
    assert code == 0 and stdout.strip() == str(out)
    loaded = load_dataset_file(out)
    assert loaded.usable >= 10 and f"{loaded.usable} rows" in err


async def docs_with_questions(services: Services, output: Path):
    """The sample docs written as a dataset, the (scripted) engine writing the questions."""
    studio = Studio(services)
    await studio.engine.start()
    try:
        return await studio.data.from_docs(DOCS, output=output, model_questions=True)
    finally:
        await studio.shutdown()


async def test_the_model_writes_the_questions(
    provisioned_services: Services, engines, tmp_path
) -> None:
    engines.script.reply = "1. How do I import a model?\n2) Which model is built in?\nWhy?\nThanks"
    result = await docs_with_questions(provisioned_services, tmp_path / "q.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    # A question counts only when it names its section ("model" here): the others keep the
    # templated question, and "Why?" is no question for any of them.
    about_models = [s for s in doc_sections(DOCS) if "model" in topic_words(" ".join(s.heading))]
    assert about_models and len(about_models) < result.sections
    asked = [row["messages"][0]["content"] for row in rows]
    assert asked.count("How do I import a model?") == len(about_models)
    assert asked.count("Which model is built in?") == len(about_models)
    assert result.model_questions == 2 * len(about_models)
    assert result.rows == result.sections + len(about_models)
    assert "the model wrote" in result.note
    # The model saw each section's text.
    assert len(engines.script.prompts) == result.sections


async def test_an_engine_failure_falls_back_to_templated_questions(
    provisioned_services: Services, engines, tmp_path
) -> None:
    engines.script.die_after_tokens = 1
    result = await docs_with_questions(provisioned_services, tmp_path / "q.jsonl")
    assert result.rows == result.sections and "the rest are templated" in result.note


def test_desk_report_for_the_form(provisioned_services: Services) -> None:
    studio = Studio(provisioned_services)
    report = studio.data.check(
        JobRequest(base=BUILTIN, dataset=shared("c4_demo.jsonl")), max_length=256
    )
    assert not report.refused and report.path == shared("c4_demo.jsonl")
    assert report.pieces and all(trained for _, trained in report.pieces)
    assert report.text.endswith("can train: 300 rows")
