"""The fine-tuning commands end to end on CPU: teach the built-in model a fact, use the
adapter as the backend, and ask."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sage_tui.cli import main
from sage_tui.core.training.supervisor import Supervisor
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
        "--probe",
        QUESTION,
        "--probe-max-tokens",
        "8",
        "--wait",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "mascot"
    assert "step 30/30" in done.stderr and "mascot: completed" in done.stderr
    # The probe's answers as they came: the base's, then the last checkpoint's beside them.
    assert "probes at step 0 (the base model" in done.stderr
    last = done.stderr[done.stderr.index("probes at step 30 (checkpoint-30") :]
    assert f"\n  {QUESTION}\n    before: " in last and "\n    now:    " in last
    shown = cli(home, "jobs", "show", "mascot")
    assert "probes at step 30 (checkpoint-30" in shown.stdout and "before: " in shown.stdout

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
        (["--base", BUILTIN, "--data", str(FACTS), "--fill", "name"], "--fill 'name' must be"),
        (["--base", BUILTIN, "--data", str(FACTS), "--fill", "=Sage"], "--fill '=Sage' must be"),
        (
            ["--base", BUILTIN, "--data", str(FACTS), "--fill", "my name=Sage"],
            "placeholder name 'my name' must be",
        ),
        (
            ["--base", BUILTIN, "--data", str(FACTS), "--fill", "name="],
            "placeholder {{name}} needs a value",
        ),
        (["--base", BUILTIN, "--data", str(FACTS), "--gpu", "x"], "--gpu: GPUs 'x': expected"),
        (["--base", BUILTIN, "--data", str(FACTS), "--gpu", "99"], "pinned to GPU 99"),
        (["--base", BUILTIN, "--data", str(FACTS), "--probe", " "], "probe prompt 1 is empty"),
        (
            ["--base", BUILTIN, "--data", str(FACTS), "--probe", "a", "--probe-max-tokens", "0"],
            "probe max tokens 0 must be in 1..512",
        ),
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


def test_fill_gives_the_job_its_placeholder_values(
    capsys, monkeypatch: pytest.MonkeyPatch, provisioned_services: Services, tmp_path: Path
) -> None:
    # Created but not started: what is checked here is the spec the job is given.
    monkeypatch.setattr(Supervisor, "submit", Supervisor.create)
    home = str(provisioned_services.settings.home)
    data = tmp_path / "identity.jsonl"
    rows = [
        {"instruction": "Who are you?", "output": "I am {{name}}, made by {{author}}."},
        {"instruction": "Hi", "output": "Hello, I am {{name}}."},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    start = ["--home", home, "finetune", "--base", BUILTIN, "--data", str(data), "--preset", "cpu"]

    code, out, err = run(capsys, *start, "--name", "half", "--fill", "name=Sage")
    assert code == 0 and out == "half\n"
    assert (
        f"warning: {data}: 1 of 2 rows hold unfilled placeholders {{{{author}}}};"
        " fill them in before training (pass --fill author=VALUE)\n"
    ) in err

    fills = ["--fill", "name=Sage", "--fill", "author=A = B"]
    code, out, err = run(capsys, *start, "--name", "whole", *fills)
    assert code == 0 and out == "whole\n" and "warning" not in err

    paths = provisioned_services.settings.paths
    specs = {
        name: json.loads((paths.job_dir(name) / "spec.json").read_text())
        for name in ("half", "whole")
    }
    assert specs["half"]["placeholders"] == {"name": "Sage"}
    assert specs["whole"]["placeholders"] == {"name": "Sage", "author": "A = B"}


@pytest.mark.slow
def test_queued_job_starts_after_the_cli_that_queued_it_exits(
    provisioned_services: Services,
) -> None:
    home = str(provisioned_services.settings.home)
    tiny = ["--base", BUILTIN, "--data", str(FACTS), "--max-steps", "2", "--batch-size", "1"]
    tiny += ["--max-length", "64", "--save-steps", "2"]
    first = cli(home, "finetune", *tiny, "--name", "first")
    second = cli(home, "finetune", *tiny, "--name", "second")
    assert first.returncode == second.returncode == 0, second.stderr[-2000:]
    assert "first: running, on CPU" in first.stderr
    assert "second: queued, waits for a free GPU or slot" in second.stderr
    # Both commands have exited: the queue keeper they left starts the second job. Only read
    # here (no poll) until it has, since polling would start it too.
    supervisor = Supervisor(provisioned_services.store, provisioned_services.settings.paths)
    deadline = time.monotonic() + 300
    while supervisor.get("second").status == "queued" and time.monotonic() < deadline:
        time.sleep(0.5)
    while time.monotonic() < deadline:
        supervisor.poll()
        jobs = {job.id: job for job in supervisor.list()}
        if not any(job.active for job in jobs.values()):
            break
        time.sleep(1)
    assert [jobs[name].status for name in ("first", "second")] == ["completed", "completed"]
    assert jobs["second"].started_at >= jobs["first"].finished_at - 5  # one at a time
    log = provisioned_services.settings.paths.queue_log.read_text()
    assert "second: running" in log
