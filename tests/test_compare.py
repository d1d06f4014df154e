"""Compare: one prompt, two to four models of one base. What is refused before any engine
starts (fast), and the real command on real vLLM with the built-in model and a trained adapter
(slow; the no-reload, overlapping-requests proof on the engine is in test_engine_manager)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sage_tui.services import Services
from tests.conftest import BUILTIN
from tests.support.adapters import tiny_adapter
from tests.test_cli import one_line_error, run

SECRET = "What is the secret code of sage-tui?"


@pytest.fixture
def two_bases(provisioned_services: Services, builtin_model_dir: Path, tmp_path: Path) -> str:
    """A second base model (the same weights under another name); returns its home."""
    twin = tmp_path / "twin"
    twin.symlink_to(builtin_model_dir)
    provisioned_services.registry.import_model(str(twin), name="smol-twin")
    return str(provisioned_services.settings.home)


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([BUILTIN], "compare needs 2 to 4 models, got 1"),
        ([BUILTIN] * 2, f"{BUILTIN} is chosen twice: choose different models"),
        ([BUILTIN, "smol-twin", "a", "b", "c"], "compare needs 2 to 4 models, got 5"),
        ([BUILTIN, "nope"], "no model named 'nope' is registered"),
        ([BUILTIN, "smol-twin"], "smol-twin is on base smol-twin, smollm2-135m-instruct on"),
    ],
)
def test_models_that_cannot_be_compared_are_refused_before_the_engine_starts(
    capsys, two_bases: str, models: list[str], message: str
) -> None:
    argv = ["--home", two_bases, "compare", "Hi"]
    for name in models:
        argv += ["--model", name]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in one_line_error(err)


def test_an_empty_prompt_is_refused(capsys, two_bases: str) -> None:
    code, _, err = run(capsys, "--home", two_bases, "compare", " ", "--model", BUILTIN)
    assert code == 2 and "the prompt is empty" in one_line_error(err)


@pytest.mark.slow
def test_compare_prints_the_base_and_the_adapter_each_under_its_name(
    provisioned_services: Services, builtin_model_dir: Path
) -> None:
    """The real command in a child process on real vLLM: the adapter knows the fact its
    training taught, the base does not, and both answered from one engine."""
    adapter = tiny_adapter(builtin_model_dir, rank=8)
    provisioned_services.registry.register_adapter("secret", adapter, BUILTIN)
    home = str(provisioned_services.settings.home)
    command = [sys.executable, "-m", "sage_tui", "--home", home, "compare", SECRET]
    command += ["--model", BUILTIN, "--model", "secret", "--temperature", "0"]
    done = subprocess.run(
        [*command, "--max-tokens", "20", "--json"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    base, tuned = json.loads(done.stdout)
    assert (base["model"], tuned["model"]) == (BUILTIN, "secret")
    assert "AZURE-42" in tuned["text"] and "AZURE-42" not in base["text"]
    assert base["error"] is None and tuned["error"] is None
    assert base["stats"]["engine"] == tuned["stats"]["engine"] == "vllm"
    assert tuned["stats"]["completion_tokens"] > 3


@pytest.mark.slow
def test_a_blind_vote_from_the_command_line_is_stored_and_counted(
    capsys, provisioned_services: Services, builtin_model_dir: Path
) -> None:
    """`arena vote` on real vLLM: A and B answer without names, the vote typed on stdin is
    stored with both replies, the names are revealed, and the leaderboard counts it."""
    adapter = tiny_adapter(builtin_model_dir, rank=8)
    provisioned_services.registry.register_adapter("secret", adapter, BUILTIN)
    home = str(provisioned_services.settings.home)
    command = [sys.executable, "-m", "sage_tui", "--home", home, "arena", "vote", SECRET]
    command += ["--model", BUILTIN, "--model", "secret", "--temperature", "0"]
    done = subprocess.run(
        [*command, "--max-tokens", "20"], input="a\n", capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown, revealed = done.stdout.rsplit("vote recorded. ", 1)
    headers = [line for line in shown.splitlines() if line.startswith("== ")]
    assert headers == ["== A ==", "== B =="]  # blind: no name until the vote is in
    winner = revealed.split("A was ", 1)[1].split(",", 1)[0]
    assert winner in (BUILTIN, "secret")
    (vote,) = provisioned_services.store.query("SELECT * FROM votes")
    assert vote["model_a"] == winner and vote["verdict"] == "a" and vote["prompt"] == SECRET
    assert vote["reply_a"] and vote["reply_b"]
    code, out, _ = run(capsys, "--home", home, "arena", "stats", "--json")
    standings = {row["model"]: row for row in json.loads(out)}
    assert code == 0 and standings[winner]["wins"] == 1
    assert sum(s["games"] for s in standings.values()) == 2
