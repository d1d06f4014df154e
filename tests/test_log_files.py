"""Log rotation: the studio's logs never grow without bound."""

from __future__ import annotations

import os
from pathlib import Path

from sage_tui.core.log_files import KEEP, MAX_BYTES, rotate
from sage_tui.terminal import engine_output_to


def test_an_oversized_log_is_rotated_and_only_keep_old_files_stay(tmp_path: Path) -> None:
    log = tmp_path / "queue.log"
    for generation in range(5):
        log.write_text(f"run {generation}\n" + "x" * 20)
        assert rotate(log, max_bytes=10, keep=3)
    assert not log.exists()  # the next open creates it afresh
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["queue.log.1", "queue.log.2", "queue.log.3"]
    newest_first = [(tmp_path / name).read_text().splitlines()[0] for name in kept]
    assert newest_first == ["run 4", "run 3", "run 2"]


def test_a_small_log_and_a_missing_log_are_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    assert not rotate(log, max_bytes=10)
    assert list(tmp_path.iterdir()) == []
    log.write_text("x" * 10)  # at the limit, not over it
    assert not rotate(log, max_bytes=10)
    assert log.read_text() == "x" * 10
    assert [p.name for p in tmp_path.iterdir()] == ["engine.log"]


def test_keep_zero_removes_an_oversized_log(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("x" * 11)
    assert rotate(log, max_bytes=10, keep=0)
    assert list(tmp_path.iterdir()) == []


def test_defaults_are_sane() -> None:
    assert 1024**2 <= MAX_BYTES <= 1024**3
    assert 1 <= KEEP <= 10


def test_engine_output_to_rotates_an_oversized_engine_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "engine.log"
    log.parent.mkdir()
    with open(log, "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: no real 10 MiB written
    with engine_output_to(log):
        os.write(1, b"fresh line\n")
    assert log.read_bytes() == b"fresh line\n"
    assert (log.parent / "engine.log.1").stat().st_size == MAX_BYTES + 1


def test_engine_output_to_appends_to_a_small_engine_log(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("earlier\n")
    with engine_output_to(log):
        os.write(2, b"later\n")
    assert log.read_text() == "earlier\nlater\n"
    assert not (tmp_path / "engine.log.1").exists()


def test_the_queue_log_is_rotated_when_a_keeper_starts(tmp_path: Path) -> None:
    from sage_tui.core.log_files import MAX_BYTES
    from sage_tui.core.training.processes import start_keeper
    from sage_tui.paths import Paths

    paths = Paths(tmp_path / "home").ensure()
    paths.queue_log.parent.mkdir(parents=True, exist_ok=True)
    paths.queue_log.write_bytes(b"x" * (MAX_BYTES + 1))
    assert start_keeper(paths, 1)  # the queue is empty: it exits at once
    assert paths.queue_log.with_name("queue.log.1").stat().st_size == MAX_BYTES + 1
