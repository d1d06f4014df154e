"""The GPU panel (ctrl+g from any screen): each GPU's figures, MIG instances, utilisation and
memory over the last minutes, and who holds it, process by process.

It reads the App's `resources` (the 1 Hz sample, owners filled in by the studio) and
`gpu_history`; it never samples anything itself. Every word from a process (its user, its
command line) is data: cells are `plain` Text, never markup, with controls made visible.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Sparkline, Static

from sage_tui.core.gpu import GpuSample, ResourceSnapshot, format_bytes
from sage_tui.core.gpu_owners import GpuOwners, OwnedProcess
from sage_tui.ui.plain_text import plain
from sage_tui.ui.widgets.resource_line import describe_resources

COMMAND_CELLS = 60
"""Cells of a command line shown in the table; the rest is cut with "…"."""


def _cut(text: str, cells: int) -> str:
    return text if len(text) <= cells else text[: cells - 1] + "…"


def gpu_heading(gpu: GpuSample) -> Text:
    """ "GPU0  NVIDIA H100 80GB HBM3  61.0 GiB / 80.0 GiB used  util 87%" and MIG lines."""
    text = Text()
    text.append(f"GPU{gpu.index}  ", style="bold")
    text.append_text(plain(gpu.name))
    text.append(f"  {format_bytes(gpu.memory_used)} / {format_bytes(gpu.memory_total)} used")
    util = "not reported" if gpu.utilization is None else f"{gpu.utilization}%"
    text.append(f"  util {util}")
    if gpu.mig_devices:
        text.append(f"\nMIG on: {len(gpu.mig_devices)} instances", style="bold")
        for mig in gpu.mig_devices:
            if mig.memory_used is None or mig.memory_total is None:
                memory = "memory unknown"
            else:
                memory = f"{format_bytes(mig.memory_used)} / {format_bytes(mig.memory_total)}"
            text.append("\n  ")
            text.append_text(plain(mig.uuid))
            text.append(f"  {memory}")
    elif gpu.mig_uuids:
        text.append(f"\nMIG on: {len(gpu.mig_uuids)} instances", style="bold")
    return text


def _range(now: str, low: str, high: str) -> str:
    return f"{now} now, steady" if low == high else f"{now} now, {low} to {high}"


def trend(label: str, values: list[float], shown: str) -> Text:
    """The words beside a sparkline: what it is, its last value, its range over the history."""
    text = Text(f"{label} ", style="bold")
    if not values:
        text.append("no samples yet", style="dim")
        return text
    text.append(shown)
    return text


def process_row(process: OwnedProcess, show_mig: bool) -> list[Text]:
    """One process as table cells (every one a Text: no cell is parsed as markup)."""
    owner = process.owner
    owner_style = {"engine": "bold cyan", "job": "bold magenta"}.get(owner.kind, "")
    memory = (
        Text("unknown", style="yellow")
        if process.used_bytes is None
        else Text(format_bytes(process.used_bytes))
    )
    cells = [
        plain(owner.label, style=owner_style),
        Text(str(process.pid)),
        plain(process.user or "?"),
        memory,
    ]
    if show_mig:
        cells.append(plain(_cut(process.mig, 16) or "whole GPU"))
    command = plain(_cut(process.shown_command, COMMAND_CELLS))
    if not process.visible:
        command.stylize("dim italic")
    cells.append(command)
    return cells


class GpuSection(Vertical):
    """One GPU on the panel: heading, two sparklines, the process table."""

    def __init__(self, gpu: GpuSample) -> None:
        super().__init__(classes="gpu-section")
        self.index = gpu.index
        self.mig = bool(gpu.mig_devices)

    def compose(self) -> ComposeResult:
        yield Static(classes="gpu-heading")
        with Horizontal(classes="gpu-trend"):
            yield Static(classes="gpu-trend-label gpu-util-label")
            yield Sparkline(classes="gpu-util")
        with Horizontal(classes="gpu-trend"):
            yield Static(classes="gpu-trend-label gpu-memory-label")
            yield Sparkline(classes="gpu-memory")
        yield Static(classes="gpu-owners")
        table: DataTable[Text] = DataTable(
            classes="gpu-processes", cursor_type="none", zebra_stripes=True
        )
        columns = ["owner", "pid", "user", "memory"]
        columns += ["on", "command"] if self.mig else ["command"]
        table.add_columns(*columns)
        yield table

    def show(
        self, gpu: GpuSample, owners: GpuOwners | None, util: list[float], memory: list[float]
    ) -> None:
        """Put in the latest figures."""
        self.query_one(".gpu-heading", Static).update(gpu_heading(gpu))
        if gpu.utilization is None:
            shown = "not reported by this GPU (charted as 0)"
        elif util:
            shown = _range(f"{util[-1]:.0f}%", f"{min(util):.0f}%", f"{max(util):.0f}%")
        else:
            shown = ""
        self.query_one(".gpu-util-label", Static).update(trend("util", util, shown))
        self.query_one(".gpu-util", Sparkline).data = util
        shown = ""
        if memory:
            low, high = format_bytes(int(min(memory))), format_bytes(int(max(memory)))
            shown = _range(format_bytes(int(memory[-1])), low, high)
        self.query_one(".gpu-memory-label", Static).update(trend("memory", memory, shown))
        self.query_one(".gpu-memory", Sparkline).data = memory
        self.query_one(".gpu-owners", Static).update(owners_line(owners))
        table = self.query_one(DataTable)
        table.clear()
        for process in owners.processes if owners else ():
            table.add_row(*process_row(process, self.mig), key=str(process.pid))


def owners_line(owners: GpuOwners | None) -> Text:
    """ "engine 9.1 GiB · ft-3 21.0 GiB · others 4.0 GiB (1 process: memory unknown)"."""
    if owners is None:
        return Text("who holds it: not read yet", style="dim")
    if not owners.shares:
        return Text("no processes on this GPU", style="dim")
    text = Text()
    for number, share in enumerate(owners.shares):
        if number:
            text.append(" · ", style="dim")
        label = "others" if share.owner.kind == "other" else share.owner.label
        text.append_text(plain(label, style="bold"))
        text.append(f" {format_bytes(share.used_bytes)}")
        if share.unknown:
            text.append(f" + {share.unknown} unknown", style="yellow")
    if owners.unknown:
        noun = "process" if owners.unknown == 1 else "processes"
        text.append(f"  ({owners.unknown} {noun}: memory unknown to NVML)", style="yellow")
    return text


class GpuPanel(ModalScreen[None]):
    """Who holds each GPU, with utilisation and memory over the last minutes."""

    BINDINGS = [Binding("escape", "dismiss", "Close", id="gpu_panel.close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="gpu-panel"):
            yield Static(Text("GPUs", style="bold"), id="gpu-panel-title")
            yield VerticalScroll(id="gpu-panel-body")
            yield Footer()

    def on_mount(self) -> None:
        self._layout: list[tuple[int, bool]] | None = None
        self.watch(self.app, "resources", self._show)

    async def _show(self, snapshot: ResourceSnapshot | None) -> None:
        body = self.query_one("#gpu-panel-body", VerticalScroll)
        gpus = snapshot.gpus if snapshot is not None else ()
        layout = [(gpu.index, bool(gpu.mig_devices)) for gpu in gpus]
        if layout != self._layout:  # the first time, or GPUs (or MIG mode) changed
            self._layout = layout
            await body.remove_children()
            if gpus:
                await body.mount_all([GpuSection(gpu) for gpu in gpus])
            else:
                await body.mount(Static(id="gpu-panel-none"))
        if not gpus:
            body.query_one("#gpu-panel-none", Static).update(self._without_gpus(snapshot))
            return
        sections = {section.index: section for section in body.query(GpuSection)}
        history = self.app.gpu_history
        for gpu in gpus:
            sections[gpu.index].show(
                gpu,
                snapshot.owners_of(gpu.index),
                history.utilization(gpu.index),
                history.memory(gpu.index),
            )

    @staticmethod
    def _without_gpus(snapshot: ResourceSnapshot | None) -> Text:
        if snapshot is None:
            return Text("reading GPU figures...", style="dim")
        text = Text("No GPU figures on this machine.\n\n", style="bold")
        text.append_text(describe_resources(snapshot))
        return text
