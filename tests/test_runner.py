"""The training runner as a real child process: TRL + PEFT on the built-in model, on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sage_tui.core.data import DatasetError
from sage_tui.core.data.loss_mask import MaskTally
from sage_tui.core.training.events import read_events
from sage_tui.core.training.job_folder import STOP_FILE, JobFolder
from sage_tui.core.training.jobs import Job
from sage_tui.core.training.probes import probe_round
from sage_tui.core.training.runner import (
    describe_failure,
    last_checkpoint,
    worker_count,
)
from sage_tui.core.training.spec import JobSpec
from sage_tui.core.training.training_rows import write_training_rows

REPO = Path(__file__).resolve().parent.parent
FACTS = REPO / "sample_data" / "sage_tui_facts.jsonl"
PROBE = "Who is the sage-tui mascot?"


def write_spec(job_dir: Path, base: Path, **values) -> JobSpec:
    job_dir.mkdir(parents=True, exist_ok=True)
    spec = JobSpec(
        task_id=job_dir.name,
        base_model="smollm2-135m-instruct",
        base_path=str(base),
        dataset=str(values.pop("dataset", FACTS)),
        **{
            "learning_rate": 1e-3,
            "max_steps": 30,
            "batch_size": 2,
            "max_length": 128,
            "save_steps": 10,
            **values,
        },
    ).check()
    (job_dir / "spec.json").write_text(spec.to_json())
    return spec


def start(job_dir: Path, *args: str) -> subprocess.Popen:
    log = open(job_dir / "train.log", "a")  # noqa: SIM115  the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "sage_tui.core.training.runner", str(job_dir), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kinds(job_dir: Path) -> list[str]:
    return [e.kind for e in read_events(job_dir)[0]]


def follow_until(supervisor, task_id: str, deadline: float, done: Callable[[Job], object]) -> Job:
    """Poll the supervisor until `done(job)`; the job must not end in between unless it is done."""
    while True:
        supervisor.poll()
        job = supervisor.get(task_id)
        if done(job):
            return job
        assert job.active, job.error
        assert time.monotonic() < deadline
        time.sleep(0.3)


def taught_answer(base: Path, adapter: Path, question: str) -> str:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, adapter)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.slow
def test_stop_then_resume_finishes_with_an_adapter_that_learned(
    tmp_path: Path, builtin_model_dir: Path
) -> None:
    job = tmp_path / "facts-job"
    write_spec(job, builtin_model_dir, probes=(PROBE,), probe_max_tokens=8)
    runner = start(job)
    deadline = time.monotonic() + 600
    while "checkpoint" not in kinds(job):  # the first checkpoint (step 10) is written
        assert runner.poll() is None, (job / "train.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    (job / STOP_FILE).touch()
    assert runner.wait(timeout=300) == 3
    events, _ = read_events(job)
    stopped = events[-1]
    assert stopped.kind == "stopped" and 10 <= stopped.data["step"] < 30
    assert last_checkpoint(job) is not None
    assert not (job / "adapter_model.safetensors").exists()

    (job / STOP_FILE).unlink()
    assert start(job, "--resume").wait(timeout=600) == 0, (job / "train.log").read_text()[-3000:]
    events, _ = read_events(job)
    assert [e.kind for e in events].count("started") == 2
    assert events[-1].kind == "finished"
    steps = [e.data for e in events if e.kind == "step"]
    assert steps[-1]["step"] == 30 and steps[-1]["loss"] < steps[0]["loss"]
    assert all(s["eta_seconds"] is None or s["eta_seconds"] >= 0 for s in steps)
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer_config.json",
        "training_args.json",
        "metrics.json",
        "spec.json",
        "events.jsonl",
        "train.log",
    ):
        assert (job / name).is_file(), name
    assert not (job / "training_args.bin").exists()
    adapter = json.loads((job / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["bias"] == "none" and not adapter.get("modules_to_save")
    # It trained on the replies only: the rows TRL got are token ids with the prompts masked.
    rows = [json.loads(line) for line in JobFolder(job).train_rows.read_text().splitlines()]
    assert len(rows) == 4 and all(set(row) == {"input_ids", "labels"} for row in rows)
    assert all(-100 in row["labels"] and row["labels"][-2] != -100 for row in rows)
    assert "loss on assistant replies only: 4 rows:" in (job / "train.log").read_text()
    assert "Orla" in taught_answer(builtin_model_dir, job, "Who is the sage-tui mascot?")
    # Probes: the base's answers at step 0 (once: the resumed run has them), then one round
    # after each checkpoint saved, except the one a stop asked for (it is not held up).
    rounds = [r for e in events if (r := probe_round(e)) is not None]
    saved = [int(e.data["path"].rsplit("-", 1)[1]) for e in events if e.kind == "checkpoint"]
    assert [(r.step, r.checkpoint) for r in rounds] == [(0, None)] + [
        (step, f"checkpoint-{step}") for step in saved if step != stopped.data["step"]
    ]
    assert saved[-1] == 30 and all(r.error is None for r in rounds)
    assert all([a.prompt for a in r.answers] == [PROBE] and r.answers[0].answer for r in rounds)
    print("probe rounds (s):", [r.seconds for r in rounds])


def test_a_bad_dataset_fails_with_the_reason(tmp_path: Path, builtin_model_dir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    job = tmp_path / "bad-job"
    write_spec(job, builtin_model_dir, dataset=bad)
    assert start(job).wait(timeout=120) == 1
    failed = read_events(job)[0][-1]
    assert failed.kind == "failed"
    assert "bad.jsonl" in failed.data["reason"] and "line 1" in failed.data["reason"]
    assert failed.data["suggestion"] == "fix the dataset or the settings, then start a new job"


def test_the_specs_placeholder_values_reach_the_training_rows(
    tmp_path: Path, builtin_model_dir: Path
) -> None:
    from transformers import AutoTokenizer

    data = tmp_path / "identity.jsonl"
    data.write_text(json.dumps({"instruction": "Who are you?", "output": "I am {{name}}."}))
    spec = JobSpec(
        task_id="j",
        base_model="m",
        base_path=str(builtin_model_dir),
        dataset=str(data),
        placeholders={"name": "Sage"},
    )
    folder = JobFolder(tmp_path / "j")
    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)
    tally = MaskTally()
    assert write_training_rows(spec, folder, tokenizer, tally=tally) == (1, 0)
    [row] = [json.loads(line) for line in folder.train_rows.read_text().splitlines()]
    trained = [token for token, label in zip(*row.values(), strict=True) if label != -100]
    assert tokenizer.decode(trained) == "I am Sage.<|im_end|>"
    assert "<|im_start|>user\nWho are you?<|im_end|>" in tokenizer.decode(row["input_ids"])
    assert (tally.rows, tally.trained, tally.dropped) == (1, len(trained), 0)
    assert folder.eval_rows.read_text() == ""


def test_rows_with_no_reply_within_the_max_length_are_left_out(
    tmp_path: Path, builtin_model_dir: Path
) -> None:
    from transformers import AutoTokenizer

    data = tmp_path / "long.jsonl"
    rows = [
        {"instruction": "word " * 60, "output": "late"},
        {"instruction": "Hi", "output": "Hello"},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = JobSpec(
        task_id="j",
        base_model="m",
        base_path=str(builtin_model_dir),
        dataset=str(data),
        max_length=48,
    )
    folder = JobFolder(tmp_path / "j")
    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)
    tally = MaskTally()
    assert write_training_rows(spec, folder, tokenizer, tally=tally) == (1, 0)
    assert (tally.rows, tally.truncated, tally.dropped) == (2, 1, 1)
    data.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(DatasetError, match="no training row has a token that carries loss"):
        write_training_rows(spec, folder, tokenizer)


def test_resume_without_a_checkpoint_fails_clearly(tmp_path: Path, builtin_model_dir: Path) -> None:
    job = tmp_path / "fresh-job"
    write_spec(job, builtin_model_dir)
    assert start(job, "--resume").wait(timeout=120) == 1
    assert "nothing to resume" in read_events(job)[0][-1].data["reason"]


def test_failure_suggestions(tmp_path: Path, builtin_model_dir: Path) -> None:
    job = tmp_path / "j"
    write_spec(job, builtin_model_dir, batch_size=8, max_length=2048)
    reason, hint = describe_failure(RuntimeError("CUDA out of memory. Tried to allocate"), job)
    assert reason.startswith("RuntimeError: CUDA out of memory")
    assert hint == "lower the batch size or the max length (now 8 and 2048), or free GPU memory"
    full = OSError(28, "No space left on device")
    assert describe_failure(full, job)[1].startswith("free disk space under")


@pytest.mark.slow
def test_sigkill_marks_the_job_interrupted_and_resume_completes_it(
    provisioned_services, builtin_model_dir: Path
) -> None:
    """The real runner under the supervisor, killed outright after its first checkpoint."""
    import os
    import signal

    from sage_tui.core.training.supervisor import Supervisor

    services = provisioned_services
    supervisor = Supervisor(services.store, services.settings.paths)
    spec = JobSpec(
        task_id="killed",
        base_model="smollm2-135m-instruct",
        base_path=str(builtin_model_dir),
        dataset=str(FACTS),
        learning_rate=1e-3,
        max_steps=20,
        batch_size=2,
        max_length=128,
        save_steps=5,
    )
    job = supervisor.submit(spec)
    try:
        deadline = time.monotonic() + 600
        follow_until(supervisor, job.id, deadline, lambda j: supervisor.last_checkpoint(j.id))
        os.killpg(supervisor.get(job.id).pid, signal.SIGKILL)
        while supervisor.get(job.id).status == "running":
            supervisor.poll()
            time.sleep(0.2)
        assert supervisor.get(job.id).status == "interrupted"

        supervisor.start(job.id, resume=True)
        done = follow_until(supervisor, job.id, deadline, lambda j: not j.active)
        assert done.status == "completed", done.error
        assert done.progress.step == 20
        assert (done.output_dir / "adapter_model.safetensors").is_file()
    finally:  # a failed test must not leave a training process behind
        if supervisor.get(job.id).active:
            supervisor.cancel(job.id, grace_seconds=1, term_seconds=1)


def test_a_save_that_fills_the_disk_leaves_no_half_adapter(tmp_path: Path) -> None:
    """A full disk cannot be produced on purpose here: the trainer's save fails like one."""
    import errno

    from sage_tui.core.training.runner import _save_final

    class FullDiskTrainer:
        def save_model(self, folder: str) -> None:
            Path(folder).mkdir(parents=True)
            (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")

    class Config:
        def to_dict(self) -> dict:
            return {}

    job = tmp_path / "job"
    job.mkdir()
    (job / "events.jsonl").write_text("")
    with pytest.raises(OSError) as info:
        _save_final(FullDiskTrainer(), Config(), None, {}, job)
    assert sorted(p.name for p in job.iterdir()) == ["events.jsonl"]  # nothing half-written
    assert describe_failure(info.value, job)[1].startswith("free disk space under")


def test_one_worker_per_visible_gpu_or_as_asked_on_cpu() -> None:
    assert worker_count({"CUDA_VISIBLE_DEVICES": "2,3"}) == 2
    assert worker_count({"CUDA_VISIBLE_DEVICES": "1"}) == 1
    assert worker_count({"CUDA_VISIBLE_DEVICES": ""}) == 1
    assert worker_count({"CUDA_VISIBLE_DEVICES": "", "SAGE_TRAIN_PROCESSES": "2"}) == 2
    assert worker_count({"CUDA_VISIBLE_DEVICES": "0", "SAGE_TRAIN_PROCESSES": "4"}) == 1
    with pytest.raises(ValueError, match="SAGE_TRAIN_PROCESSES='0' is not a whole number"):
        worker_count({"CUDA_VISIBLE_DEVICES": "", "SAGE_TRAIN_PROCESSES": "0"})


def listening_addresses(pid: int) -> set[str]:
    """The local addresses the TCP sockets of `pid` and its descendants listen on."""
    import psutil

    runner = psutil.Process(pid)
    addresses = set()
    for process in [runner, *runner.children(recursive=True)]:
        for conn in process.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                addresses.add(conn.laddr.ip)
    return addresses


@pytest.mark.slow
def test_two_workers_stop_together_and_resume_to_the_end(
    provisioned_services, builtin_model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DDP as on a job pinned to two GPUs, here with two CPU workers (gloo)."""
    from sage_tui.core.training.supervisor import Supervisor

    monkeypatch.setenv("SAGE_TRAIN_PROCESSES", "2")
    services = provisioned_services
    supervisor = Supervisor(services.store, services.settings.paths, devices=lambda: [])
    spec = write_spec(tmp_path / "ddp", builtin_model_dir, max_steps=12, save_steps=4)
    job = supervisor.submit(spec)
    try:
        deadline = time.monotonic() + 600
        follow_until(supervisor, job.id, deadline, lambda j: supervisor.last_checkpoint(j.id))
        # The workers met without torch's TCPStore (it listens on every interface): whatever
        # the job listens on is reachable from this machine only.
        listening = listening_addresses(supervisor.get(job.id).pid)
        assert listening <= {"127.0.0.1", "::1"}, listening
        stopped = supervisor.cancel(job.id, grace_seconds=120)
        assert stopped.status == "cancelled", stopped.error
        assert (job.output_dir / "checkpoints" / f"checkpoint-{stopped.progress.step}").is_dir()

        supervisor.start(job.id, resume=True)
        done = follow_until(supervisor, job.id, deadline, lambda j: not j.active)
        assert done.status == "completed", done.error
        assert (
            done.progress.step == 12 and (done.output_dir / "adapter_model.safetensors").is_file()
        )
        # Rank 0 alone reports: one `started` a run, one `stopped`, one `finished`.
        assert [k for k in kinds(done.output_dir) if k != "step" and k != "checkpoint"] == [
            "started",
            "stopped",
            "started",
            "finished",
        ]
        assert "training with 2 workers" in (done.output_dir / "train.log").read_text()
    finally:
        if supervisor.get(job.id).active:
            supervisor.cancel(job.id, grace_seconds=1, term_seconds=1)


def test_workers_and_tensor_parallel_engines_keep_collectives_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sage_tui.core.engines.base import EngineConfig
    from sage_tui.core.engines.vllm_engine import child_environ
    from sage_tui.core.training.workers import RENDEZVOUS_ENV, worker_env

    for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        monkeypatch.delenv(name, raising=False)
    env = worker_env({"PATH": "/bin"}, 1, 2, tmp_path / ".rendezvous", "3")
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["OMP_NUM_THREADS"]) == (
        "1",
        "1",
        "2",
        "3",
    )
    assert env[RENDEZVOUS_ENV] == str(tmp_path / ".rendezvous")
    assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == "lo"
    # The user's own choice of interface stands.
    assert worker_env({"NCCL_SOCKET_IFNAME": "ib0"}, 0, 2, tmp_path, "1")["NCCL_SOCKET_IFNAME"] == (
        "ib0"
    )
    shape = {"max_model_len": 2048, "max_lora_rank": 16, "gpu_indices": (0, 1)}
    assert (
        child_environ(EngineConfig("m", "/m", tensor_parallel_size=2, **shape))[
            "NCCL_SOCKET_IFNAME"
        ]
        == "lo"
    )
    assert "NCCL_SOCKET_IFNAME" not in child_environ(EngineConfig("m", "/m", **shape))
