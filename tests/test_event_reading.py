"""Events are read incrementally, on real files: a read after one more event costs that event's
bytes whether the log holds 10 or 10,000 steps (counted by the kernel: /proc/self/io); a line
still being written waits for its end; a log truncated or replaced is read again from the top;
lines that are not events are skipped and named, never raised."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sage_tui.core.training.events import SEAM, EventReader, EventWriter, read_events
from sage_tui.services import Services
from sage_tui.studio.jobs import JobDesk
from sage_tui.studio.state import Observers

STEPS = 10_000


def step_line(step: int, loss: float | None = None) -> str:
    """One step event as the runner writes it."""
    loss = round(2.0 / step, 4) if loss is None else loss
    record = {
        "kind": "step",
        "time": 1_700_000_000.0 + step,
        "step": step,
        "total_steps": STEPS * 2,
        "epoch": step / STEPS,
        "loss": loss,
        "learning_rate": 2e-4,
        "tokens_per_second": 1000.0 + step,
        "eta_seconds": float(STEPS - step),
    }
    return json.dumps(record) + "\n"


def replace_log(log: Path, text: str) -> None:
    """Put a new events.jsonl in place (a new file, as a copy put back by hand)."""
    fresh = log.with_name("new.jsonl")
    fresh.write_text(text)
    os.replace(fresh, log)


def read_chars() -> int:
    """Bytes this process has read through read() calls so far, as the kernel counts them."""
    with open("/proc/self/io", encoding="ascii") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar"))


@pytest.fixture
def desk(services: Services) -> JobDesk:
    return JobDesk(services, Observers())


def test_a_read_after_one_more_event_reads_only_that_event(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text("".join(step_line(step) for step in range(1, STEPS + 1)))
    size = log.stat().st_size
    reader = EventReader(log)
    assert len(reader.read()) == STEPS and reader.bytes_read == size

    writer = EventWriter(tmp_path)
    writer.write("step", step=STEPS + 1, loss=0.25)
    writer.close()
    (event,) = reader.read()
    assert event.data["step"] == STEPS + 1
    # The new line, and the few bytes before it that tell the file was not rewritten.
    assert reader.bytes_read == log.stat().st_size + SEAM
    assert reader.read() == [] and reader.bytes_read == log.stat().st_size + 2 * SEAM


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/self/io")
def test_the_screens_detail_and_the_poll_cost_the_same_at_step_10000(
    desk: JobDesk, spec_for
) -> None:
    job = desk.supervisor.create(spec_for("long"))  # queued: followed at every read
    log = job.folder.events_file
    costs = {}
    for steps in (100, STEPS):
        replace_log(log, "".join(step_line(step) for step in range(1, steps + 1)))
        assert len(desk.detail("long").losses) == steps  # a new file: read from the top
        assert desk.supervisor.get("long").progress.step == steps
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(step_line(steps + 1, loss=0.125))
        before = read_chars()
        detail = desk.detail("long")
        polled = desk.supervisor.get("long")
        costs[steps] = read_chars() - before
        assert detail.losses[-1] == 0.125 and len(detail.losses) == steps + 1
        assert polled.progress.step == steps + 1
    assert log.stat().st_size > 1_800_000
    # What was read for one more event: the event, the database page or two, no log.
    assert costs[STEPS] < 64 * 1024, costs
    assert costs[STEPS] < costs[100] + 16 * 1024, costs


def test_a_line_still_being_written_waits_for_its_end(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    line = step_line(1)
    log.write_text(line[:25])
    reader = EventReader(log)
    assert reader.read() == [] and reader.complete == 0
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(line[25:])
    (event,) = reader.read()
    assert event.data["step"] == 1
    assert reader.bytes_read == len(line) + min(SEAM, 25)  # the start is not read again


def test_a_run_after_a_torn_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text(step_line(1) + step_line(2)[:30])  # killed mid-write
    writer = EventWriter(tmp_path)  # the resumed runner
    writer.write("started", total_steps=9, resumed_from=1)
    writer.close()
    events, _ = read_events(tmp_path)
    assert [event.kind for event in events] == ["step", "started"]


def test_a_truncated_or_replaced_log_is_read_again_from_the_top(desk: JobDesk, spec_for) -> None:
    sup = desk.supervisor
    job = sup.create(spec_for("again"))
    log = job.folder.events_file
    log.write_text("".join(step_line(step) for step in range(1, 6)))
    assert sup.get("again").progress.step == 5 and len(desk.detail("again").losses) == 5

    replace_log(log, step_line(1, loss=9.0) + step_line(2, loss=8.0))
    assert sup.get("again").progress.step == 2
    assert desk.detail("again").losses == (9.0, 8.0)

    log.write_text(step_line(1, loss=7.0))  # truncated in place: same file, shorter
    assert sup.get("again").progress.step == 1
    assert desk.detail("again").losses == (7.0,)

    # Another run's log copied over it (`cp`): the same file, grown, other bytes.
    started = json.dumps({"kind": "started", "time": 1.0, "total_steps": 3}) + "\n"
    log.write_text(started + "".join(step_line(step, loss=float(step)) for step in (1, 2, 3)))
    assert sup.get("again").progress.step == 3
    assert desk.detail("again").losses == (1.0, 2.0, 3.0)


def test_lines_that_are_not_events_are_skipped_and_named(desk: JobDesk, spec_for) -> None:
    job = desk.supervisor.create(spec_for("junk"))
    log = job.folder.events_file
    log.write_bytes(
        step_line(1).encode()
        + b"\x00\xff\xfe binary garbage\n"
        + b"[1, 2]\n"
        + b'{"no": "kind"}\n'
        + b'"a string"\n'
        + b'{"kind": "step", "time": "noon", "step": 2, "loss": 1.5}\n'
        + step_line(3).encode()
    )
    reader = EventReader(log)
    events = reader.read()
    assert [event.data["step"] for event in events] == [1, 2, 3]
    assert events[1].time == 0.0  # a time that is not a number is unknown, not a crash
    assert (reader.skipped, reader.first_skipped) == (4, 2)
    assert desk.supervisor.get("junk").progress.step == 3
    detail = desk.detail("junk")
    assert detail.losses == (2.0, 1.5, 0.6667)
    assert detail.problem == f"{log}: 4 lines that are not events skipped (the first is line 2)"
