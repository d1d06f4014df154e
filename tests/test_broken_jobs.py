"""One bad job folder does not stop the rest: real folders, real fake-runner processes, the
real keeper. A folder deleted by hand, a torn spec.json, an events log that is a folder or
unreadable shows that job as `broken` with the reason; every other job is still followed; a
folder put right recovers; a broken job can be deleted; the keeper outlives failed polls."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sage_tui.cli import main
from sage_tui.core.store import Store
from sage_tui.core.training.job_rows import JobError
from sage_tui.core.training.jobs import JobStatus
from sage_tui.core.training.keeper import EXIT_GAVE_UP, keep
from sage_tui.core.training.supervisor import Supervisor
from sage_tui.paths import Paths
from sage_tui.studio.formatting import job_cells, job_summary
from tests.support.supervising import ended, fake_command, stepping, wait_for
from tests.support.waiting import until
from tests.test_finetune_screen import DATASET, fill, make_app, open_finetune  # noqa: F401


def test_a_broken_job_leaves_the_others_followed(supervisors, spec_for, modes) -> None:
    sup = supervisors(jobs_per_device=2)
    modes["gone"] = "hang"
    sup.submit(spec_for("gone"))
    assert sup.submit(spec_for("ok")).status == "running"
    wait_for(sup, "gone", stepping)
    gone = sup.get("gone").output_dir
    shutil.rmtree(gone)  # deleted by hand while its runner trains
    torn = sup.create(spec_for("torn"))  # waits for a slot, then its spec.json is cut short
    text = torn.folder.spec_file.read_text()
    torn.folder.spec_file.write_text(text[: len(text) // 2])
    after = sup.create(spec_for("after"))

    ok = wait_for(sup, "ok", ended)  # every poll in between saw the broken jobs
    assert (ok.status, ok.broken, ok.progress.step) == ("completed", None, 4)
    broken = sup.get("gone")
    assert broken.status == "running" and broken.progress.step >= 1  # what was read is kept
    assert broken.broken == f"job folder missing: {gone}"
    assert job_cells(broken).status is JobStatus.BROKEN
    assert job_summary(broken).endswith(f"broken: job folder missing: {gone}")

    torn = wait_for(sup, "torn", ended)  # a slot freed: it cannot start, and says why
    assert torn.status == "failed"
    spec_file = torn.folder.spec_file
    assert torn.error.startswith(f"cannot start: spec.json is not valid JSON (torn?): {spec_file}")
    assert wait_for(sup, after.id, ended).status == "completed"  # the queue went on past it

    sup.cancel("gone", grace_seconds=0.2, term_seconds=5)
    assert sup.get("gone").status.ended
    sup.delete("gone")
    sup.delete("torn")
    assert {job.id for job in sup.list()} == {"ok", "after"}
    assert not gone.exists() and not torn.output_dir.exists()


def test_a_folder_put_right_by_hand_recovers(sup: Supervisor, spec_for, tmp_path: Path) -> None:
    job = wait_for(sup, sup.submit(spec_for("moved")).id, ended)
    aside = tmp_path / "aside"
    job.output_dir.rename(aside)
    listed = {j.id: j for j in sup.list()}["moved"]
    assert listed.broken == f"job folder missing: {job.output_dir}"
    assert (listed.status, listed.progress.step) == ("completed", 4)
    aside.rename(job.output_dir)
    listed = sup.get("moved")
    assert listed.broken is None and job_cells(listed).status is JobStatus.COMPLETED


def test_events_that_cannot_be_read_mark_a_running_job_broken(supervisors, spec_for, modes) -> None:
    sup = supervisors(jobs_per_device=2)
    modes["bad"] = "hang"
    bad = sup.submit(spec_for("bad"))
    wait_for(sup, "bad", stepping)
    sup.submit(spec_for("good"))
    events = bad.folder.events_file
    aside = events.with_name("aside.jsonl")
    events.rename(aside)  # the runner goes on writing to it
    events.mkdir()  # a folder where the log should be: every read is an OSError
    assert wait_for(sup, "good", ended).status == "completed"
    job = sup.get("bad")
    assert job.status == "running"
    assert job.broken == f"events unreadable: {events}: not a file"
    step = job.progress.step
    events.rmdir()
    aside.rename(events)  # put right: followed again, from where it was
    job = wait_for(sup, "bad", lambda j: j.broken is None and j.progress.step > step)
    assert sup.cancel("bad", grace_seconds=10).status == "cancelled"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder: chmod cannot bite")
def test_an_unreadable_folder_is_broken_and_can_be_deleted(sup: Supervisor, spec_for) -> None:
    job = wait_for(sup, sup.submit(spec_for("locked")).id, ended)
    job.output_dir.chmod(0)
    try:
        assert sup.get("locked").broken.startswith(f"job folder unreadable: {job.output_dir}")
        sup.delete("locked")
    finally:
        if job.output_dir.exists():
            job.output_dir.chmod(0o700)
    assert not job.output_dir.exists() and sup.list() == []


def test_a_broken_row_is_listed_not_raised(sup: Supervisor, spec_for, store: Store) -> None:
    wait_for(sup, sup.submit(spec_for("kept")).id, ended)
    sup.create(spec_for("row"))
    with store.transaction() as db:
        db.execute("UPDATE jobs SET spec = '{\"task_id\": ', status = 'weird' WHERE id = 'row'")
        db.execute("UPDATE jobs SET progress = '{\"step\": ' WHERE id = 'kept'")
    row, kept = sup.list()
    assert row.broken == "its spec in the database does not read (JSONDecodeError)"
    assert job_cells(row).status is JobStatus.BROKEN
    assert (kept.broken, kept.progress.step) == (None, 4)  # read from its events instead
    sup.delete("row")
    assert [job.id for job in sup.list()] == ["kept"]


def test_a_torn_spec_refuses_a_resume_by_name(sup: Supervisor, spec_for, modes) -> None:
    modes["torn"] = "hang"
    job = sup.submit(spec_for("torn"))
    wait_for(sup, "torn", stepping)
    assert sup.cancel("torn", grace_seconds=10).status == "cancelled"
    job.folder.spec_file.write_text('{"task_id": "torn", "base_')
    with pytest.raises(JobError, match=r"job torn cannot be resumed: spec.json is not valid JSON"):
        sup.start("torn", resume=True)
    assert sup.get("torn").status == "cancelled"


def test_deleting_a_job_whose_folder_became_a_link_removes_only_the_link(
    sup: Supervisor, spec_for, tmp_path: Path
) -> None:
    job = wait_for(sup, sup.submit(spec_for("linked")).id, ended)
    elsewhere = tmp_path / "elsewhere"
    job.output_dir.rename(elsewhere)
    job.output_dir.symlink_to(elsewhere, target_is_directory=True)
    sup.delete("linked")
    assert not os.path.lexists(job.output_dir) and (elsewhere / "spec.json").is_file()


def test_jobs_list_and_show_name_a_broken_job(sup: Supervisor, spec_for, paths: Paths, capsys):
    job = wait_for(sup, sup.submit(spec_for("ft-lost")).id, ended)
    shutil.rmtree(job.output_dir)
    assert main(["--home", str(paths.home), "jobs", "list"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split()[:2] == ["ft-lost", "broken"]
    assert main(["--home", str(paths.home), "jobs", "show", "ft-lost"]) == 0
    assert f"broken: job folder missing: {job.output_dir}" in capsys.readouterr().out


async def test_the_finetune_screen_shows_a_broken_job(make_app) -> None:  # noqa: F811
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_finetune(app, pilot)
        fill(app, dataset=DATASET, task="ft-broken")
        await pilot.press("ctrl+s")
        await until(lambda: app.jobs and app.jobs[0].status == "completed")
        folder = app.jobs[0].output_dir
        shutil.rmtree(folder)  # deleted by hand
        table = app.screen.query_one("#finetune-jobs")
        await until(lambda: table.get_row("ft-broken")[1].plain == "broken")
        summary = app.screen.query_one("#finetune-job-summary")
        await until(lambda: f"broken: job folder missing: {folder}" in str(summary.render()))


class FlakySupervisor(Supervisor):
    """A real supervisor whose polls raise the given faults first (the fault-only seam)."""

    def __init__(self, *args, faults: list[BaseException], forever: bool = False, **kw) -> None:
        super().__init__(*args, **kw)
        self.faults, self.forever = faults, forever

    def poll(self):
        if self.faults:
            raise self.faults[0] if self.forever else self.faults.pop(0)
        return super().poll()


def test_the_keeper_outlives_failed_polls(store: Store, paths: Paths, spec_for, modes) -> None:
    faults = [
        sqlite3.OperationalError("database is locked"),
        PermissionError(13, "Permission denied", "/home/x/outputs/ft-1"),
        psutil.AccessDenied(pid=1),
    ]
    sup = FlakySupervisor(
        store, paths, runner_command=fake_command(modes), devices=lambda: [], faults=faults
    )
    sup.create(spec_for("waits"))
    log = io.StringIO()
    assert keep(paths.home, 1, 0.01, give_up_seconds=30, supervisor=sup, log=log) == 0
    lines = log.getvalue().splitlines()
    failed = [line for line in lines if "poll failed" in line]
    assert len(failed) == 3, lines
    assert "OperationalError: database is locked" in failed[0]
    assert "Permission denied" in failed[1] and "AccessDenied" in failed[2]
    assert any(line.endswith("polls work again") for line in lines)
    assert any(line.endswith("waits: running") for line in lines)
    assert wait_for(sup, "waits", ended).status == "completed"


def test_the_keeper_gives_up_on_a_lasting_fault(store: Store, paths: Paths, spec_for) -> None:
    fault = OSError(5, "I/O error")
    sup = FlakySupervisor(store, paths, devices=lambda: [], faults=[fault], forever=True)
    sup.create(spec_for("stuck"))
    log = io.StringIO()
    started = time.monotonic()
    assert keep(paths.home, 1, 0.02, give_up_seconds=0.3, supervisor=sup, log=log) == EXIT_GAVE_UP
    assert time.monotonic() - started < 5
    last = log.getvalue().splitlines()[-1]
    assert "keeper stopped: polls failed for 0.3 s, last: OSError: [Errno 5] I/O error" in last
    assert sup.get("stuck").status == "queued"  # nothing lost: it waits for the next keeper


def test_a_keeper_over_a_damaged_database_says_so_in_one_line(paths: Paths) -> None:
    paths.db.write_bytes(b"this is not a database" * 100)
    keeper = [sys.executable, "-m", "sage_tui.core.training.keeper", str(paths.home)]
    done = subprocess.run(keeper, capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_GAVE_UP
    (line,) = done.stdout.splitlines()
    assert "keeper stopped: cannot open the database:" in line and str(paths.db) in line
    assert "Traceback" not in done.stdout + done.stderr
