"""The composition root's services: built once from the settings, shared by every front end.

`open_services` builds the real ones; tests hand in fakes through its keyword arguments (a
resource monitor with fixed figures, an engine factory, a runner command, a device probe), so
the App and the CLI take nothing but a `Services`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sage_tui.config import Settings
from sage_tui.core.cpu_share import runner_env
from sage_tui.core.engines.kinds import default_engine_factory
from sage_tui.core.engines.manager import EngineManager
from sage_tui.core.engines.plan import hardware_from_snapshot
from sage_tui.core.gpu import ResourceMonitor
from sage_tui.core.gpu_owners import LiveProcesses, ProcessLookup
from sage_tui.core.gpu_scope import startup_scope
from sage_tui.core.models.registry import ModelRegistry
from sage_tui.core.store import Store
from sage_tui.core.training.processes import HostDevices
from sage_tui.core.training.supervisor import DeviceProbe, RunnerCommand, Supervisor


@dataclass
class Services:
    """What the studio works with: settings, the database, models, the engine, the GPUs."""

    settings: Settings
    store: Store
    registry: ModelRegistry
    monitor: ResourceMonitor
    engines: EngineManager
    supervisor: Supervisor
    """Fine-tuning jobs (owned here: jobs outlive screens and commands)."""
    processes: ProcessLookup = field(default_factory=LiveProcesses)
    """This machine's processes, read to say who holds the GPUs (tests hand in a table)."""
    api_server: Callable[..., Any] | None = None
    """Builds the OpenAI-compatible API server from (desk, host, port, key): set by the
    composition root (`cli.serve.api_server`); None where the API cannot be served."""

    def close(self) -> None:
        """Release the database and NVML (the engine is shut down by its owner)."""
        self.monitor.close()
        self.store.close()


def open_services(
    settings: Settings,
    *,
    monitor: Any | None = None,
    engine_factory: Callable[..., Any] | None = None,
    runner_command: RunnerCommand | None = None,
    devices: DeviceProbe | None = None,
    processes: ProcessLookup | None = None,
    api_server: Callable[..., Any] | None = None,
) -> Services:
    """Create SAGE_HOME if needed, open the database, build the registry, the engine manager
    and the job supervisor. Keyword arguments replace a part (tests use fakes).

    Nothing here imports torch or vLLM or starts an engine: that happens on first use.
    """
    paths = settings.paths.ensure()
    store = Store(paths.db)
    registry = ModelRegistry(store, paths)
    # The user's CUDA_VISIBLE_DEVICES, captured before anything starts a child; the engine
    # plans and the queue places inside it.
    scope = startup_scope()
    monitor = monitor if monitor is not None else ResourceMonitor(scope=scope)
    engines = EngineManager(
        registry,
        lambda: hardware_from_snapshot(monitor.sample(), scope),
        engine_kind=settings.engine,
        engine_factory=engine_factory or default_engine_factory,
    )
    # One device probe: the queue reads the same monitor as the status line and the planner.
    supervisor = Supervisor(
        store,
        paths,
        runner_command=runner_command,
        jobs_per_device=settings.jobs_per_gpu,
        devices=devices if devices is not None else HostDevices(scope, monitor),
        # On a CPU-only host a runner started while an engine serves gets its own cores.
        runner_env=lambda gpus: runner_env(gpu=bool(gpus), engine=engines.engine_on_cpu),
    )
    return Services(
        settings,
        store,
        registry,
        monitor,
        engines,
        supervisor,
        processes or LiveProcesses(),
        api_server,
    )
