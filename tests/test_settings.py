"""Settings precedence and SAGE_HOME creation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

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
        ("SAGE_ENGINE", "tensorrt", "unknown engine 'tensorrt'"),
        ("SAGE_POLL_SECONDS", "soon", "SAGE_POLL_SECONDS='soon' is not a positive number"),
        ("SAGE_POLL_SECONDS", "-1", "is not a positive number"),
        ("SAGE_JOBS_PER_GPU", "0", "SAGE_JOBS_PER_GPU='0' is not a whole number of at least 1"),
        ("SAGE_JOBS_PER_GPU", "two", "is not a whole number"),
    ],
)
def test_bad_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SageError, match=expected):
        Settings.load()


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
