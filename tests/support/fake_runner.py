"""A stand-in for `sage_tui.core.training.runner` that trains nothing, for supervisor tests.

    python tests/support/fake_runner.py JOB_DIR [--resume] [--mode MODE]

It writes the events the real runner writes, follows the same exit codes (0 finished, 3
stopped, else failed) and honours `JOB_DIR/STOP` and SIGTERM. The mode comes from `--mode`, else
the file `JOB_DIR/fake_mode`, else $FAKE_RUNNER_MODE, else "ok":

- ok: started, a few steps, a checkpoint, finished; exit 0
- fail: started, failed {reason, suggestion}; exit 1
- hang: steps until asked to stop, then a checkpoint and stopped; exit 3
- stubborn: steps forever, ignoring STOP and SIGTERM (only SIGKILL ends it)
- crash: started, a step, then os._exit(9) without a terminal event
- nan: started, steps whose loss becomes NaN at step NAN_STEP (a checkpoint one step before),
  then failed with the real runner's reason and suggestion; exit 1

A spec with `probes` gets a probe round at step 0 (unless resumed) and after each checkpoint,
answered "answer N to PROMPT" at step N.

Each run appends its argv to `JOB_DIR/argv.jsonl`, and the GPUs it was given
(CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER) to `JOB_DIR/gpus.jsonl`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sage_tui.core.training.divergence import divergence
from sage_tui.core.training.events import EventWriter

STEPS = 4
STOP_NAME = "STOP"
DELAY = 0.05
NAN_STEP = 3
LEARNING_RATE = 2e-4


def last_checkpoint(job_dir: Path) -> int:
    """The highest checkpoint number in the job folder, 0 if none."""
    numbers = [
        int(p.name.split("-")[1])
        for p in (job_dir / "checkpoints").glob("checkpoint-*")
        if p.name.split("-")[1].isdigit()
    ]
    return max(numbers, default=0)


def probe(job_dir: Path, events: EventWriter, step: int, checkpoint: str | None) -> None:
    """A probe round, as the real runner writes it, when the job's spec has probes."""
    try:
        prompts = json.loads((job_dir / "spec.json").read_text()).get("probes") or []
    except (OSError, ValueError):
        prompts = []
    if prompts:
        answers = [{"prompt": p, "answer": f"answer {step} to {p}"} for p in prompts]
        events.write("probe", step=step, checkpoint=checkpoint, seconds=0.01, answers=answers)


def save_checkpoint(job_dir: Path, events: EventWriter, step: int, probing: bool = True) -> Path:
    """Make checkpoints/checkpoint-STEP as the trainer does (state written last); report it."""
    path = job_dir / "checkpoints" / f"checkpoint-{step}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_model.safetensors").write_bytes(b"fake")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    events.write("checkpoint", step=step, path=str(path))
    if probing:  # as in the real runner, a stop is not held up by a round
        probe(job_dir, events, step, path.name)
    return path


def step_event(events: EventWriter, step: int, total: int, loss: float | None = None) -> None:
    """One training step's figures."""
    events.write(
        "step",
        step=step,
        total_steps=total,
        epoch=step / max(total, 1),
        loss=round(2.0 / step, 4) if loss is None else loss,
        learning_rate=LEARNING_RATE,
        tokens_per_second=1000.0 + step,
        eta_seconds=max(total - step, 0) * DELAY,
    )


def main(argv: list[str]) -> int:
    job_dir = Path(argv[0])
    resume = "--resume" in argv
    mode = None
    if "--mode" in argv:
        mode = argv[argv.index("--mode") + 1]
    elif (job_dir / "fake_mode").is_file():
        mode = (job_dir / "fake_mode").read_text().strip()
    mode = mode or os.environ.get("FAKE_RUNNER_MODE") or "ok"
    with open(job_dir / "argv.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(argv) + "\n")
    with open(job_dir / "gpus.jsonl", "a", encoding="utf-8") as handle:
        names = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
        handle.write(json.dumps({name: os.environ.get(name) for name in names}) + "\n")

    stop = {"requested": False}
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))

    events = EventWriter(job_dir)
    first = last_checkpoint(job_dir) if resume else 0
    total = first + STEPS if mode in ("ok", "fail", "crash", "nan") else 1_000_000
    events.write("started", total_steps=total, resumed_from=first if resume else None)
    if not resume:
        probe(job_dir, events, 0, None)

    if mode == "fail":
        events.write("failed", reason="out of memory.", suggestion="Lower the batch size.")
        return 1
    if mode == "crash":
        step_event(events, first + 1, total)
        os._exit(9)
    if mode == "nan":
        for step in range(first + 1, first + NAN_STEP + 1):
            loss = float("nan") if step == first + NAN_STEP else round(2.0 / step, 4)
            step_event(events, step, total, loss)
            if step == first + NAN_STEP - 1:
                save_checkpoint(job_dir, events, step)
            time.sleep(DELAY)
        reason, suggestion = divergence({"loss": loss}, step, LEARNING_RATE)
        events.write("failed", step=step, reason=reason, suggestion=suggestion)
        return 1

    step = first
    while True:
        if mode != "stubborn" and (stop["requested"] or (job_dir / STOP_NAME).exists()):
            checkpoint = save_checkpoint(job_dir, events, step, probing=False)
            events.write("stopped", step=step, checkpoint=str(checkpoint))
            return 3
        if mode == "ok" and step >= total:
            break
        step += 1
        step_event(events, step, total)
        time.sleep(DELAY)

    save_checkpoint(job_dir, events, step)
    (job_dir / "adapter_config.json").write_text("{}")
    events.write("finished", output_dir=str(job_dir), metrics={"train_loss": 2.0 / step})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
