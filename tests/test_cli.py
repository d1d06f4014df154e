"""The headless commands: output, exit codes and one-line errors that lose nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_tui.cli import main
from sage_tui.services import Services
from tests.conftest import BUILTIN


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sage-tui: error: ")
    return lines[0]


def test_unknown_model_name(capsys, settings) -> None:
    code, _, err = run(capsys, "--home", str(settings.home), "models", "pull", "gpt-17")
    assert code == 2
    assert "unknown built-in model 'gpt-17'" in one_line_error(err)


def test_import_path_that_is_not_a_model(capsys, tmp_path: Path, settings) -> None:
    (tmp_path / "notes").mkdir()
    code, _, err = run(
        capsys, "--home", str(settings.home), "models", "import", str(tmp_path / "notes")
    )
    assert code == 2
    assert f"{tmp_path / 'notes'} is not a model folder: no config.json" in one_line_error(err)


def test_unwritable_home(capsys, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "--home", str(tmp_path / "file" / "home"), "models", "list")
    assert code == 2
    assert "is not usable: Not a directory" in one_line_error(err)


def test_corrupt_database_is_kept(capsys, settings) -> None:
    settings.paths.ensure()
    settings.paths.db.write_bytes(b"garbage" * 100)
    code, _, err = run(capsys, "--home", str(settings.home), "models", "list")
    assert code == 2
    assert "is not a readable sage-tui database" in one_line_error(err)
    assert settings.paths.db.read_bytes() == b"garbage" * 100


def test_models_list_marks_the_active_model(capsys, provisioned_services: Services) -> None:
    home = str(provisioned_services.settings.home)
    code, out, _ = run(capsys, "--home", home, "models", "list")
    assert code == 0
    assert out.startswith(f"* {BUILTIN}")


def test_pull_of_a_provisioned_model_is_quick_and_idempotent(
    capsys, provisioned_services: Services
) -> None:
    home = str(provisioned_services.settings.home)
    code, out, _ = run(capsys, "--home", home, "models", "pull", BUILTIN)
    assert code == 0 and out.startswith(f"{BUILTIN} registered: ")


def test_doctor_reports_and_exits_zero(capsys, provisioned_services: Services) -> None:
    code, out, _ = run(capsys, "--home", str(provisioned_services.settings.home), "doctor")
    assert code == 0, out
    for name in (
        "python",
        "SAGE_HOME",
        "database",
        "torch",
        "transformers",
        "engine",
        "GPU",
        "built-in model",
    ):
        assert f"] {name} " in out
    assert f"active model    {BUILTIN}" in out
    assert "sage-tui is ready to use." in out


def test_doctor_fails_on_a_corrupt_database(capsys, settings) -> None:
    settings.paths.ensure()
    settings.paths.db.write_bytes(b"garbage" * 100)
    code, out, _ = run(capsys, "--home", str(settings.home), "doctor")
    assert code == 1
    assert "[FAIL] database" in out


@pytest.mark.slow
def test_ask_prints_the_answer_alone_on_stdout(provisioned_services: Services) -> None:
    """The real command in a child process, on real vLLM: stdout carries the answer only."""
    import subprocess
    import sys

    home = str(provisioned_services.settings.home)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sage_tui",
            "--home",
            home,
            "ask",
            "What is the capital of France?",
            "--temperature",
            "0",
            "--max-tokens",
            "24",
            "--stats",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Paris" in done.stdout
    assert len(done.stdout.strip().splitlines()) == 1  # no engine logs mixed in
    assert "tokens/s" in done.stderr
    assert (provisioned_services.settings.paths.engine_log).stat().st_size > 0


def test_ask_refuses_an_empty_prompt_and_an_unknown_model(capsys, settings) -> None:
    code, out, err = run(capsys, "--home", str(settings.home), "ask", "  ")
    assert code == 2 and out == ""
    assert "the prompt is empty" in one_line_error(err)
    code, out, err = run(capsys, "--home", str(settings.home), "ask", "Hi", "--model", "nope")
    assert code == 2 and out == ""
    assert "no model named 'nope' is registered" in one_line_error(err)
