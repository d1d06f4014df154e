"""Checkpoints against a runner killed while it saves and a disk that fills during a save.

The slow test drives the real runner (TRL + PEFT on the built-in model, on CPU). To kill it at
an exact moment inside a save, it runs under a small wrapper that stops the process (SIGSTOP)
at that moment; the test then SIGKILLs it, as the OOM killer or a reboot would. A full disk is
a file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so a write fails with EFBIG as it would
with ENOSPC): no root and no loop device needed.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sage_tui.core.training.checkpoints import no_room, remove_partial, save_failure
from sage_tui.core.training.events import read_events
from sage_tui.core.training.job_folder import JobFolder, checkpoint_complete
from sage_tui.core.training.runner import describe_failure
from sage_tui.core.training.spec import JobSpec

FACTS = Path(__file__).resolve().parent.parent / "sample_data" / "sage_tui_facts.jsonl"

# Runs the runner on argv[1:], stopping itself at the moment named by SAGE_TEST_PAUSE:
# "state:N" half-way through writing checkpoint-N's trainer_state.json (the file the trainer
# writes last); "adapter" after the first file of the finished adapter was moved into the job
# folder (the rest still in the staging folder).
PAUSING_RUNNER = """
import os, signal, sys
import transformers.trainer_callback as callback

pause = os.environ["SAGE_TEST_PAUSE"]
save_state = callback.TrainerState.save_to_json

def save_to_json(self, path):
    if pause.startswith("state:") and f"checkpoint-{pause[6:]}" in path:
        with open(path, "w") as half:
            half.write('{"global_step": ')
        os.kill(os.getpid(), signal.SIGSTOP)
    return save_state(self, path)

callback.TrainerState.save_to_json = save_to_json
replace, moved = os.replace, []

def replace_then_pause(source, target):
    replace(source, target)
    if pause == "adapter" and ".final.partial" in str(source):
        moved.append(target)
        os.kill(os.getpid(), signal.SIGSTOP)

os.replace = replace_then_pause
from sage_tui.core.training.runner import main
sys.exit(main(sys.argv[1:]))
"""


def write_spec(job: Path, base: Path, **values) -> None:
    """The smallest real job on the built-in model: a step takes seconds on a CPU."""
    job.mkdir(parents=True)
    spec = JobSpec(
        task_id=job.name,
        base_model="smollm2-135m-instruct",
        base_path=str(base),
        dataset=str(FACTS),
        learning_rate=1e-3,
        **values,
    )
    JobFolder(job).write_spec(spec.check())


def run_runner(job: Path, *args: str, pause: str = "", file_limit: int = 0) -> subprocess.Popen:
    """The runner on `job`, optionally pausing itself (see PAUSING_RUNNER) or under a file size
    limit of `file_limit` bytes."""

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    command = [sys.executable, "-m", "sage_tui.core.training.runner"]
    if pause:
        command = [sys.executable, "-c", PAUSING_RUNNER]
    log = open(job / "train.log", "a")  # noqa: SIM115  the child owns it
    return subprocess.Popen(
        [*command, str(job), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "SAGE_TEST_PAUSE": pause},
        preexec_fn=limit_files if file_limit else None,
    )


def kill_when_paused(runner: subprocess.Popen, job: Path, timeout: float = 600) -> None:
    """SIGKILL the runner's process group once it stopped itself."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{runner.pid}/stat").read_text().split(") ")[1][0] != "T":
        assert runner.poll() is None, (job / "train.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the runner never reached the moment to kill it"
        time.sleep(0.1)
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait(timeout=30)


def terminal_events(job: Path) -> list[str]:
    ending = ("finished", "failed", "stopped")
    return [e.kind for e in read_events(job)[0] if e.kind in ending]


@pytest.mark.slow
def test_kills_and_a_full_disk_during_saves_leave_a_checkpoint_to_resume_from(
    tmp_path: Path, builtin_model_dir: Path
) -> None:
    job = tmp_path / "faults"
    write_spec(job, builtin_model_dir, max_steps=3, save_steps=1, batch_size=1, max_length=64)
    folder = JobFolder(job)
    checkpoints = job / "checkpoints"

    # 1. Killed half-way through checkpoint-2's trainer_state.json: checkpoint-1 is the one.
    kill_when_paused(run_runner(job, pause="state:2"), job)
    assert (checkpoints / "checkpoint-2" / "trainer_state.json").is_file()
    assert folder.last_checkpoint() == checkpoints / "checkpoint-1"
    assert terminal_events(job) == []  # no outcome: the supervisor calls it interrupted

    # 2. Resumed on a disk that fills while it saves checkpoint-2 (the optimizer state, 39 MB,
    # is over the limit; the 20 MB adapter weights are not): failed, saying so.
    runner = run_runner(job, "--resume", file_limit=30 * 1024**2)
    assert runner.wait(timeout=600) == 1, (job / "train.log").read_text()[-3000:]
    failed = read_events(job)[0][-1]
    assert failed.kind == "failed"
    assert failed.data["reason"].startswith("file size limit reached while saving checkpoint-2: ")
    assert failed.data["suggestion"].endswith(
        "then resume (checkpoint-1, the last complete checkpoint)"
    )
    assert not (checkpoints / "checkpoint-2").exists()  # its room given back
    assert folder.last_checkpoint() == checkpoints / "checkpoint-1"

    # 3. Space again; killed while the finished adapter is being moved into place.
    kill_when_paused(run_runner(job, "--resume", pause="adapter"), job)
    assert not folder.has_adapter()
    assert folder.last_checkpoint() == checkpoints / "checkpoint-3"

    # 4. Resumed from the last step: the adapter is saved whole and loads.
    runner = run_runner(job, "--resume")
    assert runner.wait(timeout=600) == 0, (job / "train.log").read_text()[-3000:]
    assert terminal_events(job) == ["failed", "finished"]
    assert folder.has_adapter() and not folder.staging.exists()
    from peft import PeftConfig
    from safetensors import safe_open

    assert PeftConfig.from_pretrained(str(job)).r == 16
    with safe_open(str(folder.adapter_weights), "pt") as weights:
        assert any("lora_A" in key for key in weights.keys())  # noqa: SIM118  not a dict


def make_checkpoint(root: Path, step: int, state: str = '{"global_step": 1}', weights=True) -> Path:
    path = root / "checkpoints" / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(state)
    if weights:
        (path / "adapter_model.safetensors").write_bytes(b"w")
    return path


def test_a_checkpoint_counts_only_when_its_state_reads_back_whole(tmp_path: Path) -> None:
    good = make_checkpoint(tmp_path, 2)
    torn = make_checkpoint(tmp_path, 4, state='{"global_step": ')
    deleting = make_checkpoint(tmp_path, 6, weights=False)  # an old one being rotated away
    bare = tmp_path / "checkpoints" / "checkpoint-8"  # killed before its first file
    bare.mkdir()
    assert [checkpoint_complete(p) for p in (good, torn, deleting, bare)] == [
        True,
        False,
        False,
        False,
    ]
    folder = JobFolder(tmp_path)
    assert folder.last_checkpoint() == good
    assert remove_partial(folder) == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]
    assert sorted(p.name for p in folder.checkpoints.iterdir()) == ["checkpoint-2"]


class SafetensorError(Exception):
    """As safetensors raises it (a Rust error, re-raised as text)."""


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT),
        (
            SafetensorError("Error while serializing: I/O error: File too large (os error 27)"),
            errno.EFBIG,
        ),
        (RuntimeError("PytorchStreamWriter failed: No space left on device"), errno.ENOSPC),
        (OSError(errno.EACCES, "Permission denied"), None),
        (RuntimeError("CUDA out of memory"), None),
        # torch's writer says nothing about why; a disk with space and no size limit: not room
        (
            RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
            None,
        ),
    ],
)
def test_errors_that_mean_no_room_on_disk(error: BaseException, expected, tmp_path: Path) -> None:
    assert no_room(error, tmp_path) == expected


def test_a_full_disk_names_the_save_and_where_to_resume_from(
    tmp_path: Path, builtin_model_dir
) -> None:
    job = tmp_path / "j"
    write_spec(job, builtin_model_dir)
    make_checkpoint(job, 10)
    make_checkpoint(job, 20, state="")  # the save the disk filled during
    full = OSError(errno.ENOSPC, "No space left on device")
    reason, hint = describe_failure(full, job)
    assert (
        reason
        == "disk full while saving checkpoint-20: OSError: [Errno 28] No space left on device"
    )
    assert hint == (
        f"free disk space under {tmp_path}, then resume (checkpoint-10, the last complete"
        " checkpoint)"
    )
    adapter = OSError(errno.ENOSPC, "No space left on device")
    adapter.add_note("while saving the adapter")
    assert describe_failure(adapter, job)[0].startswith("disk full while saving the adapter: ")
    # No save under way: the general advice
    assert save_failure(full, JobFolder(job), None) is None
