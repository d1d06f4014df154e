"""The training process: `python -m sage_tui.core.training.runner JOB_DIR [--resume]`.

Runs TRL's `SFTTrainer` with a PEFT LoRA adapter on the job's spec (`JOB_DIR/spec.json`) and
reports through `JOB_DIR/events.jsonl`. It is started in its own session by the supervisor, so
it keeps running when the TUI exits or the SSH connection drops.

With more than one GPU visible (the queue shows a job only the GPUs it was given) the runner
re-executes itself under `torch.distributed.run` in the same process, one worker per GPU
(DDP): rank 0 reports and saves, every rank stops on the same step. On a machine without GPUs
`SAGE_TRAIN_PROCESSES` asks for that many CPU workers (gloo), which is how DDP is tested here.
`SAGE_TRAIN_CPUS` (set by the supervisor on CPU hosts while an engine runs, see
`core.cpu_share`) pins the runner to those cores and sizes its threads to match.

Exit codes: 0 finished (adapter saved, `finished` event); 3 stopped on request (a `STOP` file
in the job folder, or SIGTERM) after a final checkpoint (`stopped` event); 1 failed (`failed`
event with the reason and a suggestion). A loss or gradient norm that becomes NaN or infinite
fails the job on that step without saving it, so the last checkpoint is still a good one to
resume from. The adapter is written to a temporary folder and moved
into place only when complete (its weights last), so a full disk never leaves a half-written
adapter behind; checkpoints cut short by a kill or a full disk are never resumed from and are
removed (see `checkpoints`), and a save that ran out of room says so ("disk full while saving
checkpoint-N: ...").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sage_tui.core.cpu_share import TRAIN_CPUS_ENV, allowed_cpus, apply_runner_share
from sage_tui.core.data.loss_mask import MaskTally
from sage_tui.core.private_files import keep_private
from sage_tui.core.training.checkpoints import (
    SAVING_ADAPTER,
    being_saved,
    remove_partial,
    save_failure,
)
from sage_tui.core.training.divergence import divergence
from sage_tui.core.training.events import EventWriter
from sage_tui.core.training.job_folder import (
    EXIT_FAILED,
    EXIT_FINISHED,
    EXIT_STOPPED,
    METRICS,
    TRAINING_ARGS,
    JobFolder,
)
from sage_tui.core.training.probes import Prober
from sage_tui.core.training.spec import JobSpec
from sage_tui.core.training.trainer_config import check_remote_code, sft_arguments
from sage_tui.core.training.training_rows import training_datasets, write_training_rows
from sage_tui.core.training.workers import join_process_group, run_workers
from sage_tui.errors import one_line

PROCESSES_ENV = "SAGE_TRAIN_PROCESSES"


def last_checkpoint(job_dir: Path) -> Path | None:
    """The newest complete checkpoint of the job in `job_dir` (see JobFolder.last_checkpoint)."""
    return JobFolder(job_dir).last_checkpoint()


def make_reporter(
    events: EventWriter, job_dir: Path, resumed_from: Path | None, probes: Prober
) -> Any:
    """A TrainerCallback that writes events, answers the probes (see `probes`), honours stop
    requests and stops a job whose loss is no longer a number (the class is built here because
    transformers is imported only in the child)."""
    from transformers import TrainerCallback

    class Reporter(TrainerCallback):
        def __init__(self) -> None:
            self.stop_requested = False
            self.diverged: tuple[str, str] | None = None
            """(reason, suggestion) once the loss became NaN or infinite."""
            self.reporting = _rank() == 0
            self.started = time.monotonic()
            self.first_step: int | None = None
            self.last: tuple[float, float] | None = None  # (time, tokens seen)

        def on_train_begin(self, args, state, control, **kwargs):
            if not self.reporting:
                return
            events.write(
                "started",
                total_steps=state.max_steps,
                resumed_from=int(resumed_from.name.rsplit("-", 1)[1]) if resumed_from else None,
                checkpoint=str(resumed_from) if resumed_from else None,
            )
            if resumed_from is None:  # the base's answers: a resumed job has them already
                probes.run(kwargs["model"], 0, None)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            # Every worker sees the same logged figures (the trainer averages the loss over
            # them), so all of them stop on this step without a vote.
            found = divergence(logs, state.global_step, float(args.learning_rate))
            newly = found is not None and self.diverged is None
            if newly:
                self.diverged = found
                self._refuse_save(control)
            if not self.reporting:
                return
            if "eval_loss" in logs:
                events.write("eval", step=state.global_step, eval_loss=logs["eval_loss"])
            if "loss" not in logs:
                return
            now = time.monotonic()
            if self.first_step is None:
                self.first_step, self.started = state.global_step, now
            tokens = float(logs.get("num_tokens", 0) or 0)
            speed = None
            if self.last is not None and tokens > self.last[1] and now > self.last[0]:
                speed = (tokens - self.last[1]) / (now - self.last[0])
            self.last = (now, tokens)
            done = state.global_step - self.first_step
            eta = None
            if done > 0:
                eta = (now - self.started) / done * (state.max_steps - state.global_step)
            events.write(
                "step",
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=round(state.epoch or 0.0, 3),
                loss=logs["loss"],
                learning_rate=logs.get("learning_rate"),
                tokens_per_second=speed,
                eta_seconds=eta,
            )
            if newly:
                reason, suggestion = self.diverged
                events.write("failed", step=state.global_step, reason=reason, suggestion=suggestion)

        @staticmethod
        def _refuse_save(control) -> None:
            # The weights are broken: no checkpoint of them (the last complete one stays the
            # one a resume starts from), no evaluation, no more steps.
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False

        def on_save(self, args, state, control, **kwargs):
            if not self.reporting:
                return
            path = JobFolder(job_dir).checkpoints / f"checkpoint-{state.global_step}"
            events.write("checkpoint", step=state.global_step, path=str(path))
            if not self.stop_requested:  # a stop asked for is not held up by a round
                probes.run(kwargs["model"], state.global_step, path.name)

        def on_step_end(self, args, state, control, **kwargs):
            if self.diverged is not None:
                self._refuse_save(control)
                return
            asked = self.stop_requested or JobFolder(job_dir).stop_requested()
            if _agreed(asked):  # every worker stops on the same step, or the others hang
                self.stop_requested = True
                control.should_training_stop = True
                control.should_save = True

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.diverged is not None:
                self._refuse_save(control)

    return Reporter()


def train(job_dir: Path, resume: bool, events: EventWriter) -> int:
    """Run the job; returns the exit code."""
    folder = JobFolder(job_dir)
    spec = folder.read_spec().check()
    check_remote_code(spec, job_dir)
    if _rank() == 0 and (removed := remove_partial(folder)):
        print(f"removed checkpoints cut short: {', '.join(removed)}", flush=True)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        spec.base_path, trust_remote_code=spec.trust_remote_code
    )
    if _rank() == 0:
        # The rows are tokenized here, the prompts masked: TRL trains on the labels as given.
        tally = MaskTally()
        train_rows, eval_rows = write_training_rows(spec, folder, tokenizer, tally=tally)
        print(f"training rows: {train_rows} train, {eval_rows} eval", flush=True)
        what = "every token" if spec.train_on_prompts else "assistant replies only"
        print(f"loss on {what}: {tally.summary(spec.max_length)}", flush=True)
    _wait_for_rank_zero()
    train_dataset, eval_dataset = training_datasets(folder)

    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    checkpoint = folder.last_checkpoint() if resume else None
    if resume and checkpoint is None:
        raise RuntimeError(f"nothing to resume: {folder.checkpoints} holds no checkpoint")
    config = SFTConfig(
        **sft_arguments(spec, folder, cuda=cuda, evaluating=eval_dataset is not None)
    )
    lora = LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=spec.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    prober = Prober(spec.probes, spec.probe_max_tokens, tokenizer, events)
    reporter = make_reporter(events, job_dir, checkpoint, prober)

    def on_sigterm(signum, frame) -> None:
        reporter.stop_requested = True

    signal.signal(signal.SIGTERM, on_sigterm)
    trainer = SFTTrainer(
        model=spec.base_path,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[reporter],
    )
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if reporter.diverged is not None:  # its `failed` event is written already
        return EXIT_FAILED
    if reporter.stop_requested:
        if reporter.reporting:
            saved = folder.last_checkpoint()
            events.write("stopped", step=trainer.state.global_step, checkpoint=str(saved or ""))
        return EXIT_STOPPED
    if not reporter.reporting:
        return EXIT_FINISHED
    metrics = dict(result.metrics)
    _save_final(trainer, config, spec, metrics, job_dir)
    events.write("finished", output_dir=str(job_dir), metrics=metrics)
    return EXIT_FINISHED


def _save_final(trainer, config, spec: JobSpec, metrics: dict, job_dir: Path) -> None:
    """Write the adapter, tokenizer, training_args.json and metrics.json, all or nothing."""
    folder = JobFolder(job_dir)
    staging = folder.staging
    shutil.rmtree(staging, ignore_errors=True)
    try:
        trainer.save_model(str(staging))
        (staging / TRAINING_ARGS).write_text(
            json.dumps(config.to_dict(), indent=2, default=str), encoding="utf-8"
        )
        (staging / METRICS).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        # Pickled training args: never read back (JSON above is the record).
        (staging / "training_args.bin").unlink(missing_ok=True)
        # The weights go last: a job has an adapter once they are there (`has_adapter`).
        weights = staging / folder.adapter_weights.name
        for item in [*(i for i in staging.iterdir() if i != weights), weights]:
            os.replace(item, job_dir / item.name)
    except BaseException as err:
        err.add_note(SAVING_ADAPTER)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def describe_failure(err: BaseException, job_dir: Path) -> tuple[str, str]:
    """(reason, suggestion) for a failed job, in words a user can act on."""
    text = f"{type(err).__name__}: {err}".strip()
    first = one_line(Exception(text))
    folder = JobFolder(job_dir)
    no_room = save_failure(err, folder, being_saved(err, folder))
    if no_room is not None:
        return no_room
    try:
        spec = folder.read_spec()
    except Exception:  # the spec itself may be what failed
        spec = None
    lowered = text.lower()
    if "out of memory" in lowered or type(err).__name__ == "OutOfMemoryError":
        now = f" (now {spec.batch_size} and {spec.max_length})" if spec else ""
        return first, f"lower the batch size or the max length{now}, or free GPU memory"
    if isinstance(err, OSError) and getattr(err, "errno", None) == 28:
        return first, f"free disk space under {job_dir.parent}, then resume the job"
    if type(err).__name__ in ("DatasetError", "SpecError"):
        return first, "fix the dataset or the settings, then start a new job"
    return first, f"see {folder.log_file} for the full error"


def _rank() -> int:
    """This worker's rank under torch.distributed.run; 0 when training alone."""
    return int(os.environ.get("RANK", "0") or 0)


def _wait_for_rank_zero() -> None:
    """Under several workers: wait until rank 0 got here (it writes the rows the others
    read). One worker alone: nothing."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _agreed(flag: bool) -> bool:
    """True on every worker if it is true on any (one worker alone: `flag`)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    vote = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return bool(vote.item())


def worker_count(env: Mapping[str, str] = os.environ) -> int:
    """Workers to train with: one per visible GPU; on a machine without GPUs,
    `SAGE_TRAIN_PROCESSES` (default 1)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = len([part for part in visible.split(",") if part.strip()])
    else:
        import torch

        gpus = torch.cuda.device_count()
    if gpus:
        return gpus
    raw = env.get(PROCESSES_ENV, "1")
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{PROCESSES_ENV}={raw!r} is not a whole number of at least 1")
    return count


def main(argv: list[str] | None = None) -> int:
    """Entry point of the training child process."""
    parser = argparse.ArgumentParser(prog="python -m sage_tui.core.training.runner")
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    # Before any file is written: torch, safetensors and PEFT save with the process umask.
    keep_private()
    job_dir = args.job_dir.absolute()
    events = EventWriter(job_dir)
    try:
        # Before torch starts its threads: they size themselves from what this sets.
        pinned = apply_runner_share()
    except ValueError as err:
        events.write("failed", reason=str(err), suggestion=f"unset {TRAIN_CPUS_ENV}")
        return EXIT_FAILED
    if "WORLD_SIZE" not in os.environ:
        try:
            workers = worker_count()
        except ValueError as err:
            events.write("failed", reason=str(err), suggestion=f"unset {PROCESSES_ENV}")
            return EXIT_FAILED
        if workers > 1:
            # This process stays the workers' parent, under the pid the supervisor follows.
            events.close()
            # Each worker gets its part of the cores, unless the user chose a thread count for
            # a job that is not pinned.
            mine = os.environ.get("OMP_NUM_THREADS") if not pinned else None
            threads = mine or str(max(1, len(allowed_cpus()) // workers))
            print(f"training with {workers} workers", flush=True)
            return run_workers(job_dir, args.resume, workers, threads)
    try:
        join_process_group()
        return train(job_dir, args.resume, events)
    except BaseException as err:  # every way out must leave a `failed` event behind
        traceback.print_exc()
        reason, suggestion = describe_failure(err, job_dir)
        if _rank() == 0:  # a save cut short gives its room back
            remove_partial(JobFolder(job_dir))
        events.write("failed", reason=reason, suggestion=suggestion)
        return EXIT_FAILED
    finally:
        events.close()


if __name__ == "__main__":
    sys.exit(main())
