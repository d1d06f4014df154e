"""Who holds the GPUs, in the studio's terms: its engine, its jobs (by task id), other processes.

The roots of the attribution are gathered here, where the engine and the jobs are known: the
studio's own process stands for its engine (the App never initialises CUDA itself, so what
holds GPU memory under it is the engine: vLLM's EngineCore child and its workers, or the
transformers engine in this process), and each running job's runner pid for that job. A runner
is itself a child of the studio that started it; the nearest root wins, so its DDP workers are
the job's, not the engine's. `core.gpu_owners` does the walking; this desk feeds it and fills
in `ResourceSnapshot.owners`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace

from sage_tui.core.gpu import ResourceSnapshot
from sage_tui.core.gpu_owners import ENGINE, Owner, ProcessLookup, gpu_owners, job_owner
from sage_tui.core.training.jobs import Job, JobStatus
from sage_tui.studio.state import JobsChanged, Observers, StudioEvent


def gpu_roots(studio_pid: int, jobs: tuple[Job, ...]) -> dict[int, Owner]:
    """{pid: owner}: the studio's process for its engine, each running job's runner."""
    roots: dict[int, Owner] = {studio_pid: ENGINE}
    for job in jobs:
        # Only a running job's pid: an ended job's pid may since belong to anyone.
        if job.status is JobStatus.RUNNING and job.pid:
            roots[job.pid] = job_owner(job.id)
    return roots


class GpuUseDesk:
    """Attributes each GPU process of a resource sample to the engine, a job or others.

    It follows the jobs as the studio polls them (JobsChanged); :meth:`attribute` is called
    from the resource poll's thread.
    """

    def __init__(
        self, lookup: ProcessLookup, observers: Observers, studio_pid: int | None = None
    ) -> None:
        self._lookup = lookup
        self._studio_pid = os.getpid() if studio_pid is None else studio_pid
        self._jobs: tuple[Job, ...] = ()
        self._lock = threading.Lock()  # the poll and the job poll are different threads
        observers.subscribe(self._event)

    def _event(self, event: StudioEvent) -> None:
        if isinstance(event, JobsChanged):
            self._jobs = tuple(event.jobs)

    def roots(self) -> dict[int, Owner]:
        """The roots as of the last job poll."""
        return gpu_roots(self._studio_pid, self._jobs)

    def attribute(self, snapshot: ResourceSnapshot) -> ResourceSnapshot:
        """`snapshot` with `owners` filled in for each GPU (blocks: reads /proc)."""
        if not snapshot.gpus:
            return snapshot
        with self._lock:
            owners = gpu_owners(snapshot.gpus, self.roots(), self._lookup)
            self._lookup.forget()
        return replace(snapshot, owners=owners)
