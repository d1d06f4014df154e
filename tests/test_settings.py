"""Settings precedence and SAGE_HOME creation."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from sage_tui.cli import main
from sage_tui.config import Settings
from sage_tui.errors import HomeError, SageError
from sage_tui.paths import Paths


def test_defaults_env_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Settings.load().home == Path("~/.sage").expanduser()
    monkeypatch.setenv("SAGE_HOME", str(tmp_path / "env"))
    monkeypatch.setenv("SAGE_ENGINE", "transformers")
    monkeypatch.setenv("SAGE_POLL_SECONDS", "0.5")
    monkeypatch.setenv("SAGE_JOBS_PER_GPU", "2")
    from_env = Settings.load()
    got = (from_env.home, from_env.engine, from_env.resource_poll_seconds, from_env.jobs_per_gpu)
    assert got == (tmp_path / "env", "transformers", 0.5, 2)
    flagged = Settings.load(home=str(tmp_path / "flag"), engine="vllm")
    assert (flagged.home, flagged.engine) == (tmp_path / "flag", "vllm")


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        (
            "SAGE_ENGINE",
            "tensorrt",
            "SAGE_ENGINE='tensorrt' is not one of auto, vllm, transformers",
        ),
        ("SAGE_POLL_SECONDS", "soon", "SAGE_POLL_SECONDS='soon' is not a number of seconds from"),
        ("SAGE_JOBS_PER_GPU", "0", "SAGE_JOBS_PER_GPU='0' is not a whole number from 1 to 64"),
        ("SAGE_DEFAULT_MODEL", "gpt-5", "SAGE_DEFAULT_MODEL='gpt-5' is not a built-in model"),
        ("SAGE_HOME", " ", "SAGE_HOME=' ' is not a folder path"),
    ],
)
def test_bad_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SageError, match=re.escape(expected)):
        Settings.load()


HUGE = "9" * 5000  # int() refuses strings over 4300 digits with a ValueError of its own
HOSTILE = ["nan", "NaN", "inf", "-inf", "-1", "0", " ", "1e999", "2x", "\u0661", "1_0", HUGE]

# (variable, raw value, the value loaded, or None when it must be refused)
CASES = [
    *[("SAGE_POLL_SECONDS", raw, None) for raw in HOSTILE],
    ("SAGE_POLL_SECONDS", "0.01", None),  # a busy loop
    ("SAGE_POLL_SECONDS", "3601", None),
    ("SAGE_POLL_SECONDS", "0x10", None),
    ("SAGE_POLL_SECONDS", "", 1.0),  # empty is unset
    ("SAGE_POLL_SECONDS", " 0.5 ", 0.5),
    ("SAGE_POLL_SECONDS", "0.05", 0.05),
    ("SAGE_POLL_SECONDS", "3600", 3600.0),
    ("SAGE_POLL_SECONDS", "2e1", 20.0),
    *[("SAGE_JOBS_PER_GPU", raw, None) for raw in HOSTILE],
    ("SAGE_JOBS_PER_GPU", "+2", None),
    ("SAGE_JOBS_PER_GPU", "2.0", None),
    ("SAGE_JOBS_PER_GPU", "65", None),
    ("SAGE_JOBS_PER_GPU", "18446744073709551617", None),
    ("SAGE_JOBS_PER_GPU", "", 1),
    ("SAGE_JOBS_PER_GPU", " 2 ", 2),
    ("SAGE_JOBS_PER_GPU", "64", 64),
    ("SAGE_ENGINE", " ", None),
    ("SAGE_ENGINE", "VLLM", None),
    ("SAGE_ENGINE", "nan", None),
    ("SAGE_ENGINE", "", "auto"),
    ("SAGE_ENGINE", " vllm ", "vllm"),
    ("SAGE_DEFAULT_MODEL", " ", None),
    ("SAGE_DEFAULT_MODEL", "../../etc", None),
    ("SAGE_DEFAULT_MODEL", "", "smollm2-135m-instruct"),
    ("SAGE_HOME", " ", None),
    ("SAGE_HOME", "~no-such-user-for-sage-tests/home", None),
]
FIELD = {
    "SAGE_POLL_SECONDS": "resource_poll_seconds",
    "SAGE_JOBS_PER_GPU": "jobs_per_gpu",
    "SAGE_ENGINE": "engine",
    "SAGE_DEFAULT_MODEL": "default_model",
    "SAGE_HOME": "home",
}


@pytest.mark.parametrize(("var", "raw", "loaded"), CASES, ids=lambda v: repr(v)[:24])
def test_hostile_environment_values(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str, loaded: object
) -> None:
    monkeypatch.setenv(var, raw)
    if loaded is not None:
        assert getattr(Settings.load(), FIELD[var]) == loaded
        return
    with pytest.raises(SageError) as info:
        Settings.load()
    message = str(info.value)
    assert message.startswith(f"{var}=") and " is not " in message
    assert "\n" not in message and len(message) < 200, message
    assert raw[:20] in message or repr(raw)[1:21] in message


def test_flags_pass_the_same_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(SageError, match=re.escape("--home=' ' is not a folder path")):
        Settings.load(home=" ")
    with pytest.raises(SageError, match=re.escape("--engine='tensorrt' is not one of")):
        Settings.load(engine="tensorrt")
    # A flag wins over a variable, but a bad variable still fails: it is a typo to fix.
    monkeypatch.setenv("SAGE_ENGINE", "tensorrt")
    with pytest.raises(SageError, match="SAGE_ENGINE"):
        Settings.load(engine="vllm")
    monkeypatch.delenv("SAGE_ENGINE")
    assert Settings.load(home=tmp_path).home == tmp_path  # a Path, as code passes it


@pytest.mark.parametrize(("var", "raw"), [("SAGE_POLL_SECONDS", "nan"), ("SAGE_JOBS_PER_GPU", "x")])
def test_cli_reports_a_bad_variable_in_one_line_with_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    var: str,
    raw: str,
) -> None:
    monkeypatch.setenv("SAGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(var, raw)
    assert main(["doctor"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"sage-tui: error: {var}={raw!r} is not ")
    assert not (tmp_path / "home").exists()  # nothing was created


def test_home_is_created_private_with_its_folders(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "a" / "home").ensure()
    assert stat.S_IMODE(paths.home.stat().st_mode) == 0o700
    assert paths.models.is_dir() and paths.finetune_outputs.is_dir()
    assert paths.finetune_outputs == paths.home / "studio_finetune" / "outputs"
    assert list(paths.home.iterdir()) != []  # the write check leaves no file behind...
    assert not any(p.name.startswith(".write-check") for p in paths.home.iterdir())


def test_existing_home_keeps_its_mode(tmp_path: Path) -> None:
    home = tmp_path / "shared"
    home.mkdir(mode=0o755)
    home.chmod(0o750)
    Paths(home).ensure()
    assert stat.S_IMODE(home.stat().st_mode) == 0o750


def test_home_under_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    with pytest.raises(HomeError) as info:
        Paths(blocker / "home").ensure()
    assert str(info.value).startswith(
        f"SAGE_HOME {blocker / 'home'} is not usable: Not a directory"
    )
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_home_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    try:
        with pytest.raises(HomeError, match="is not usable: Permission denied"):
            Paths(home).ensure()
        assert list(home.iterdir()) == []
    finally:
        home.chmod(0o700)
