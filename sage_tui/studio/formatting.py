"""How a job reads in words: one formatter for the CLI, the job table and the job summary.

Plain strings only (no markup): front ends style them, and text from the disk (a job's error)
stays data. NaN or infinite figures from training print as `nan` / `inf`, never fail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sage_tui.core.gpu import ResourceSnapshot, format_bytes
from sage_tui.core.training.jobs import Job, JobStatus
from sage_tui.core.training.placement import describe
from sage_tui.core.training.probes import ProbeRound, probe_progress


def format_eta(seconds: float | None) -> str:
    """Seconds left as `42 s`, `3 min 05 s` or `2 h 10 min`; `-` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_loss(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.4f}"


@dataclass(frozen=True)
class JobCells:
    """One job as a row of the job list (the table and `jobs list`)."""

    id: str
    status: JobStatus
    where: str
    steps: str
    loss: str
    eta: str


def job_place(job: Job) -> str:
    """Where a job runs or ran; for a queued job, the GPUs it waits for ("-": any)."""
    if job.status is JobStatus.QUEUED:
        return describe(tuple(job.spec.gpus)) if job.spec.gpus else "-"
    return job.placement or "-"


def job_cells(job: Job) -> JobCells:
    """The cells of one job: id, status, where, steps done (and share), loss, ETA."""
    progress = job.progress
    steps = "-"
    if progress.step is not None:
        steps = f"{progress.step}/{progress.total_steps or '?'}"
        if progress.fraction is not None:
            steps += f" {progress.fraction:.0%}"
    return JobCells(
        job.id,
        job.shown_status,
        job_place(job),
        steps,
        format_loss(progress.last_loss),
        format_eta(progress.eta_seconds),
    )


def progress_line(job: Job) -> str:
    """The step, loss, speed and ETA of a job in one line ("" before its first step)."""
    progress = job.progress
    if progress.step is None:
        return ""
    parts = [f"step {progress.step}/{progress.total_steps or '?'}"]
    if progress.last_loss is not None:
        parts.append(f"loss {format_loss(progress.last_loss)}")
    if progress.eval_loss is not None:
        parts.append(f"eval loss {format_loss(progress.eval_loss)}")
    if progress.tokens_per_second:
        parts.append(f"{progress.tokens_per_second:.0f} tokens/s")
    if job.status is JobStatus.RUNNING:
        parts.append(f"ETA {format_eta(progress.eta_seconds)}")
    return " · ".join(parts)


def job_summary(job: Job, resources: ResourceSnapshot | None = None) -> str:
    """A job in a few lines: status, base, where, progress, the memory its GPUs hold (from
    `resources`, while it runs), and why it failed or waits."""
    parts = [f"{job.id}: {job.status}", f"base {job.base_model}"]
    if job.placement:
        parts.append(f"on {job.placement}")
    line = progress_line(job)
    text = " · ".join(parts) + (f"\n{line}" if line else "") + _gpu_memory(job, resources)
    if job.error:
        label = "waiting" if job.status is JobStatus.QUEUED else "error"
        text += f"\n{label}: {job.error}"
    if job.broken:
        text += f"\nbroken: {job.broken}"
    return text


def _gpu_memory(job: Job, resources: ResourceSnapshot | None) -> str:
    if job.status is not JobStatus.RUNNING or not job.gpus or resources is None:
        return ""
    return "".join(
        f"\nGPU {gpu.index}: {format_bytes(gpu.memory_used)}/{format_bytes(gpu.memory_total)}"
        " in use" + (f", {gpu.utilization}% busy" if gpu.utilization is not None else "")
        for gpu in resources.gpus
        if gpu.index in job.gpus
    )


def probe_lines(rounds: Sequence[ProbeRound]) -> list[str]:
    """The latest probe round as lines for a terminal: each answer indented under its prompt,
    with the base's answer (step 0) beside it; [] for a job without probe rounds."""
    if not rounds:
        return []
    last = rounds[-1]
    where = last.checkpoint or "the base model"
    seconds = f", {last.seconds:.1f} s" if last.seconds is not None else ""
    lines = [f"probes at step {last.step} ({where}{seconds}):"]
    before = {p.prompt: p.before for p in probe_progress(rounds)}
    for item in last.answers:
        lines.append(f"  {_indented(item.prompt, '  ')}")
        if last.step > 0 and before.get(item.prompt) is not None:
            lines.append(f"    before: {_indented(before[item.prompt] or '(empty)', ' ' * 12)}")
        label = "now:   " if last.step > 0 else "answer:"
        lines.append(f"    {label} {_indented(item.answer or '(empty)', ' ' * 12)}")
    if last.error:
        lines.append(f"  probe failed: {last.error}")
    return lines


def _indented(text: str, indent: str) -> str:
    """Text whose later lines start under its first (a multi-line answer stays readable)."""
    return ("\n" + indent).join(line.rstrip() for line in text.strip().splitlines() or [""])
