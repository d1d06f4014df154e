"""Who holds each GPU's memory: the studio's engine, a training job, or another process.

:func:`attribute` is a pure function from a GPU's processes (NVML's running-process lists),
the known roots (``{pid: Owner}``: the studio's own process for its engine, each running job's
runner) and a :class:`ProcessLookup` to one :class:`OwnedProcess` per process: a process
belongs to the nearest root among itself and its ancestors (walked by parent pid, at most
`MAX_DEPTH` steps), so a DDP worker under a runner belongs to that job even though the runner
is itself a child of the studio. :func:`summarise` adds them up per owner.

Nothing is dropped: a pid whose details cannot be read here (another PID namespace, gone, not
ours to see) is an "other" process marked not visible, and memory NVML cannot read stays
``None`` ("memory unknown"), never 0.

:class:`LiveProcesses` is the lookup over psutil (imported inside its methods), caching per
process what does not change while it lives (user, command line); it is called from the 1 Hz
resource poll, in a thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sage_tui.core.nvml_read import GpuProcess, GpuSample

MAX_DEPTH = 32
"""Parent steps walked from a GPU process towards a root: engine workers are a few levels
down; a deeper chain (or a loop in a stale table) is not ours."""

COMMAND_LIMIT = 400
"""Characters of a command line kept: the panel truncates further; a huge argv is not news."""


@dataclass(frozen=True)
class Owner:
    """Who a GPU process belongs to: `kind` is "engine", "job" (with its task id) or "other"."""

    kind: str
    job: str = ""
    """The job's task id when `kind` is "job"."""

    @property
    def label(self) -> str:
        """How the owner is named on screen: "engine", the task id, or "other"."""
        return self.job if self.kind == "job" else self.kind


ENGINE = Owner("engine")
OTHER = Owner("other")


def job_owner(task_id: str) -> Owner:
    """The owner for a training job's processes."""
    return Owner("job", task_id)


@dataclass(frozen=True)
class ProcessDetails:
    """What can be read about a process here."""

    user: str
    """User name (or the uid as text when it has no name); "" when it cannot be read."""
    command: str
    """Its command line, arguments joined by spaces ("" when it cannot be read)."""


class ProcessLookup(Protocol):
    """Reads processes of this machine; tests hand in a table."""

    def parent(self, pid: int) -> int | None:
        """The parent pid, or None when the process cannot be seen (or has none)."""

    def details(self, pid: int) -> ProcessDetails | None:
        """User and command, or None when the process cannot be seen from here."""

    def forget(self) -> None:
        """Called after each sample: drop what was cached about processes not asked for."""


@dataclass(frozen=True)
class OwnedProcess:
    """One process holding GPU memory, with its owner."""

    pid: int
    used_bytes: int | None
    """None: NVML cannot read this process's memory ("memory unknown")."""
    owner: Owner
    user: str
    command: str
    visible: bool
    """False when NVML lists the pid but this machine shows no such process (another PID
    namespace, gone since, or hidden from us): shown as "pid N (not visible here)"."""
    mig: str = ""
    """The MIG instance it runs on ("" for the whole GPU)."""

    @property
    def shown_command(self) -> str:
        """The command as the panel shows it (never empty)."""
        if not self.visible:
            return f"pid {self.pid} (not visible here)"
        return self.command or "(command not readable)"


@dataclass(frozen=True)
class OwnerShare:
    """One owner's part of one GPU."""

    owner: Owner
    used_bytes: int
    """The memory of its processes NVML could read."""
    unknown: int
    """How many of its processes NVML could not read the memory of."""
    processes: int


@dataclass(frozen=True)
class GpuOwners:
    """Who holds one GPU: every process, and each owner's share (engine, jobs, others)."""

    index: int
    processes: tuple[OwnedProcess, ...]
    shares: tuple[OwnerShare, ...]
    """Engine first, then jobs by task id, then others; owners with no process are absent."""

    @property
    def unknown(self) -> int:
        """Processes on this GPU whose memory NVML cannot read."""
        return sum(share.unknown for share in self.shares)

    def share(self, owner: Owner) -> OwnerShare | None:
        """The share of `owner`, or None when it holds nothing here."""
        return next((s for s in self.shares if s.owner == owner), None)


def owner_of(pid: int, roots: Mapping[int, Owner], lookup: ProcessLookup) -> Owner:
    """The nearest root among `pid` and its ancestors; OTHER when none is within MAX_DEPTH."""
    seen: set[int] = set()
    current: int | None = pid
    for _ in range(MAX_DEPTH + 1):
        if current is None or current <= 0 or current in seen:
            return OTHER
        owner = roots.get(current)
        if owner is not None:
            return owner
        seen.add(current)
        current = lookup.parent(current)
    return OTHER


def attribute(
    processes: Sequence[GpuProcess], roots: Mapping[int, Owner], lookup: ProcessLookup
) -> tuple[OwnedProcess, ...]:
    """Each GPU process with its owner, user and command, in the order given."""
    owned: list[OwnedProcess] = []
    for process in processes:
        details = lookup.details(process.pid)
        owned.append(
            OwnedProcess(
                pid=process.pid,
                used_bytes=process.used_bytes,
                owner=owner_of(process.pid, roots, lookup),
                user=details.user if details else "",
                command=details.command[:COMMAND_LIMIT] if details else "",
                visible=details is not None,
                mig=process.mig,
            )
        )
    return tuple(owned)


def _order(owner: Owner) -> tuple[int, str]:
    return ({"engine": 0, "job": 1}.get(owner.kind, 2), owner.job)


def summarise(index: int, owned: Iterable[OwnedProcess]) -> GpuOwners:
    """Each owner's share of GPU `index`: bytes NVML could read, and how many it could not."""
    processes = tuple(owned)
    used: dict[Owner, int] = {}
    unknown: dict[Owner, int] = {}
    count: dict[Owner, int] = {}
    for process in processes:
        owner = process.owner
        count[owner] = count.get(owner, 0) + 1
        used.setdefault(owner, 0)
        unknown.setdefault(owner, 0)
        if process.used_bytes is None:
            unknown[owner] += 1
        else:
            used[owner] += process.used_bytes
    shares = tuple(
        OwnerShare(owner, used[owner], unknown[owner], count[owner])
        for owner in sorted(count, key=_order)
    )
    return GpuOwners(index, processes, shares)


def gpu_owners(
    gpus: Sequence[GpuSample], roots: Mapping[int, Owner], lookup: ProcessLookup
) -> tuple[GpuOwners, ...]:
    """Who holds each GPU of a sample."""
    return tuple(summarise(gpu.index, attribute(gpu.processes, roots, lookup)) for gpu in gpus)


class LiveProcesses:
    """The :class:`ProcessLookup` of this machine, through psutil.

    A process's user and command line are read once per process (a pid reused by a new
    process is told apart by its start time); its parent is read on every call, since a
    process whose parent died is handed to another. :meth:`forget` drops processes not asked
    about since the last call, so the cache holds only what the GPUs run now.
    """

    def __init__(self) -> None:
        self._procs: dict[int, tuple[Any, ProcessDetails | None]] = {}
        self._asked: set[int] = set()

    def _process(self, pid: int) -> tuple[Any, ProcessDetails | None] | None:
        import psutil

        self._asked.add(pid)
        cached = self._procs.get(pid)
        try:
            if cached is not None and cached[0].is_running():
                return cached
            entry = (psutil.Process(pid), None)
        except (psutil.Error, OSError, ValueError):
            # Gone, hidden from us, or a pid of another PID namespace (NVML lists host pids
            # inside containers).
            self._procs.pop(pid, None)
            return None
        self._procs[pid] = entry
        return entry

    def parent(self, pid: int) -> int | None:
        """The parent pid, or None when the process cannot be seen."""
        import psutil

        entry = self._process(pid)
        if entry is None:
            return None
        try:
            return int(entry[0].ppid())
        except (psutil.Error, OSError):
            return None

    def details(self, pid: int) -> ProcessDetails | None:
        """User and command line (read once per process), or None when it cannot be seen."""
        import psutil

        entry = self._process(pid)
        if entry is None:
            return None
        proc, details = entry
        if details is not None:
            return details
        try:
            with proc.oneshot():
                user = _read(proc.username)
                argv = _read(proc.cmdline)
                command = " ".join(argv) if isinstance(argv, list) else ""
                if not command:
                    command = str(_read(proc.name) or "")
        except psutil.NoSuchProcess:
            self._procs.pop(pid, None)
            return None
        details = ProcessDetails(str(user or ""), command)
        if argv:
            # An empty argv is a process mid-exec (or a zombie): read it again next time.
            self._procs[pid] = (proc, details)
        return details

    def forget(self) -> None:
        """Drop the processes not asked about since the last call."""
        for pid in set(self._procs) - self._asked:
            del self._procs[pid]
        self._asked = set()


def _read(getter: Any) -> Any:
    import psutil

    try:
        return getter()
    except psutil.ZombieProcess:
        return None  # ended, not yet reaped: its pid and memory still stand
    except psutil.NoSuchProcess:
        raise
    except (psutil.Error, OSError, KeyError):
        return None  # one field not readable (access denied): the others still stand
