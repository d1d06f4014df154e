"""The fine-tuning commands end to end on CPU: teach the built-in model a fact, use the
adapter as the backend, and ask."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sage_tui.cli import main
from sage_tui.services import Services
from tests.conftest import BUILTIN
from tests.test_cli import one_line_error, run

REPO = Path(__file__).resolve().parent.parent
FACTS = REPO / "sample_data" / "sage_tui_facts.jsonl"
QUESTION = "Who is the sage-tui mascot?"


def cli(home: str, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sage_tui", "--home", home, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_finetune_use_ask(provisioned_services: Services) -> None:
    home = str(provisioned_services.settings.home)
    base = cli(home, "ask", QUESTION, "--temperature", "0", "--max-tokens", "24")
    assert base.returncode == 0, base.stderr[-2000:]
    assert "Orla" not in base.stdout

    done = cli(
        home,
        "finetune",
        "--base",
        BUILTIN,
        "--data",
        str(FACTS),
        "--name",
        "mascot",
        "--max-steps",
        "30",
        "--lr",
        "1e-3",
        "--batch-size",
        "2",
        "--max-length",
        "128",
        "--save-steps",
        "10",
        "--wait",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "mascot"
    assert "step 30/30" in done.stderr and "mascot: completed" in done.stderr

    listed = cli(home, "jobs", "list")
    assert listed.stdout.startswith("mascot") and "completed" in listed.stdout

    used = cli(home, "use", "mascot")
    assert used.returncode == 0
    assert "sage-finetuned-mascot is now the chat's model" in used.stdout

    tuned = cli(home, "ask", QUESTION, "--temperature", "0", "--max-tokens", "24")
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    assert "Orla" in tuned.stdout


def test_finetune_refusals_create_nothing(capsys, provisioned_services: Services, tmp_path) -> None:
    home = str(provisioned_services.settings.home)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"oops": 1}\n')
    cases = [
        (["--base", "nope", "--data", str(FACTS)], "no model named 'nope' is registered"),
        (["--base", BUILTIN, "--data", str(bad)], "bad.jsonl: "),
        (["--base", BUILTIN, "--data", str(FACTS), "--rank", "12"], "LoRA rank 12 is not one"),
        (["--base", BUILTIN, "--data", str(FACTS), "--lr", "3"], "learning rate 3.0 must be"),
        (["--base", BUILTIN, "--data", str(tmp_path / "none.jsonl")], "none.jsonl"),
    ]
    for argv, expected in cases:
        code, _, err = run(capsys, "--home", home, "finetune", *argv)
        assert code == 2
        assert expected in one_line_error(err)
    outputs = provisioned_services.settings.paths.finetune_outputs
    assert list(outputs.iterdir()) == []
    code, _, err = run(capsys, "--home", home, "use", "no-such-job")
    assert code == 2 and "no model named 'no-such-job'" in one_line_error(err)
    assert main(["--home", home, "jobs", "list"]) == 0
