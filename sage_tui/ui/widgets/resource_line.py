"""What the status line says about the GPUs (and CPU/RAM without them), at a given width.

Each GPU reads `GPU0 61.0/80.0 GiB 87%`, followed, when there is room, by who holds it:
`· engine 9.1 · ft-3 21 · others 4` (GiB). :func:`fit_status` picks the longest form that
fits the terminal: full mode tabs, then tabs with only the current mode named, then the jobs
added up, then no owners (full tabs again if they fit), then the model's loading words
shortened, so the GPU figures are the last thing to be cut. The GPU panel (ctrl+g) always
shows everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from sage_tui.core.gpu import ResourceSnapshot, format_bytes
from sage_tui.core.gpu_owners import GpuOwners, OwnerShare
from sage_tui.ui.plain_text import plain

MODE_TABS = (
    ("finetune", "1", "Finetune"),
    ("models", "2", "Models"),
    ("chat", "3", "Chat"),
    ("compare", "4", "Compare"),
)

_GIB = 1024**3
_JOB_ID_CELLS = 12
"""A task id longer than this is shown by its end (default ids differ in their time)."""
MODEL_PADDING = 4
"""Cells around the model part (its CSS padding) and after the figures."""
RESOURCES_PADDING = 1


def mode_tabs(mode: str, short: bool = False) -> Text:
    """The mode tabs; `short` names only the current mode (the Footer names them all)."""
    tabs = Text()
    for name, key, label in MODE_TABS:
        current = name == mode
        style = "reverse bold" if current else ""
        tabs.append(f" {key} {label} " if current or not short else f" {key} ", style=style)
    return tabs


def gib(n: int) -> str:
    """A compact GiB figure without its unit: "9.1", "21", "0.3"."""
    value = n / _GIB
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _share_figure(share: OwnerShare) -> str:
    if share.unknown and not share.used_bytes:
        return "?"  # memory NVML cannot read: unknown, never 0
    return gib(share.used_bytes) + ("+?" if share.unknown else "")


def _job_label(task_id: str) -> str:
    return task_id if len(task_id) <= _JOB_ID_CELLS else "…" + task_id[-(_JOB_ID_CELLS - 1) :]


def describe_owners(owners: GpuOwners, merge_jobs: bool = False) -> Text:
    """ " · engine 9.1 · ft-3 21 · others 4" for one GPU ("" when nothing holds it);
    `merge_jobs` adds the jobs up as "jobs N" when there are several."""
    parts: list[tuple[str, str]] = []
    jobs = [s for s in owners.shares if s.owner.kind == "job"]
    for share in owners.shares:
        kind = share.owner.kind
        if kind == "job" and merge_jobs and len(jobs) > 1:
            if share is jobs[0]:
                merged = OwnerShare(
                    share.owner,
                    sum(s.used_bytes for s in jobs),
                    sum(s.unknown for s in jobs),
                    sum(s.processes for s in jobs),
                )
                parts.append((f"{len(jobs)} jobs", _share_figure(merged)))
            continue
        label = {"engine": "engine", "other": "others"}.get(kind) or _job_label(share.owner.job)
        parts.append((label, _share_figure(share)))
    text = Text()
    for label, figure in parts:
        text.append(" · ", style="dim")
        text.append(plain(label, style="cyan" if label != "others" else ""))
        text.append(f" {figure}")
    return text


def describe_resources(snapshot: ResourceSnapshot | None, owners: str = "all") -> Text:
    """One line of figures: every GPU's memory and utilisation (and who holds it: `owners`
    "all", "merged" jobs, or "none"), or CPU and RAM without GPUs."""
    if snapshot is None:
        return Text("reading GPU figures...", style="dim")
    text = Text()
    if snapshot.gpus:
        for number, gpu in enumerate(snapshot.gpus):
            share = gpu.memory_used / gpu.memory_total if gpu.memory_total else 0.0
            style = "red" if share > 0.9 else "yellow" if share > 0.7 else "green"
            util = "--" if gpu.utilization is None else f"{gpu.utilization}%"
            if number:
                text.append("  ")
            text.append(f"GPU{gpu.index} ", style="bold")
            used, total = format_bytes(gpu.memory_used), format_bytes(gpu.memory_total)
            if used.endswith(" GiB") and total.endswith(" GiB"):
                used = used[: -len(" GiB")]  # "61.0/80.0 GiB": one unit for both
            text.append(f"{used}/{total}", style=style)
            text.append(f" {util}")
            held = snapshot.owners_of(gpu.index)
            if held is not None and owners != "none":
                text.append_text(describe_owners(held, merge_jobs=owners == "merged"))
        if snapshot.gpu_error:
            text.append(plain(f"  unread GPUs: {snapshot.gpu_error}", style="bold red"))
        return text
    if snapshot.gpu_error:
        # GPUs are there but cannot be read: not the same as a machine without GPUs.
        text.append(plain(f"GPUs unreadable: {snapshot.gpu_error}  ", style="bold red"))
    else:
        text.append(plain(f"no GPU: {snapshot.no_gpu_reason}  ", style="dim"))
    text.append("CPU ", style="bold")
    text.append(f"{snapshot.cpu_percent:.0f}%  ")
    text.append("RAM ", style="bold")
    text.append(f"{format_bytes(snapshot.ram_used)}/{format_bytes(snapshot.ram_total)}")
    return text


@dataclass(frozen=True)
class StatusParts:
    """The three parts of the status line as they fit a width."""

    tabs: Text
    model: Text
    resources: Text


def fit_status(
    width: int,
    mode: str,
    model: Text,
    status: Text,
    snapshot: ResourceSnapshot | None,
    *,
    trouble: bool = False,
) -> StatusParts:
    """The longest status line that fits `width` cells; `model` is "model NAME", `status` the
    engine's words after it: shortened last, before the GPU figures are cut, unless they are
    `trouble` (the engine stopped or failed), which matters more than any figure."""
    model_cells = model.cell_len + (status.cell_len + 2 if status.cell_len else 0)
    for short, owners in (
        (False, "all"),
        (True, "all"),
        (True, "merged"),
        (False, "none"),  # no owners: the full tabs again, if they fit
        (True, "none"),
    ):
        tabs = mode_tabs(mode, short)
        resources = describe_resources(snapshot, owners)
        used = tabs.cell_len + model_cells + MODEL_PADDING + resources.cell_len + RESOURCES_PADDING
        if used <= width:
            return StatusParts(tabs, _joined(model, status), resources)
    # Still too wide: the engine's words give way to the figures (down to a few cells).
    room = width - tabs.cell_len - model.cell_len - MODEL_PADDING - resources.cell_len - 3
    room -= RESOURCES_PADDING
    if status.cell_len and room < status.cell_len and not trouble:
        status = status[: max(room, 12) - 1] + Text("…", style=status.style)
    return StatusParts(tabs, _joined(model, status), resources)


def _joined(model: Text, status: Text) -> Text:
    if not status.cell_len:
        return model
    text = model.copy()
    text.append("  ")
    text.append_text(status)
    return text
