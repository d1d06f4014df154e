"""Shared fixtures: an isolated SAGE_HOME, services over it, the real built-in model, fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_tui.config import Settings
from sage_tui.core.gpu import GpuProcess, GpuSample, ResourceSnapshot
from sage_tui.core.models.builtin import BUILTIN_MODELS, is_provisioned, provision
from sage_tui.paths import Paths, resolve_home
from sage_tui.services import Services, open_services
from tests.support.fake_engine import FakeEngines
from tests.support.fake_processes import TableProcesses

pytest_plugins = ["tests.support.supervising"]

BUILTIN = "smollm2-135m-instruct"
REPO = Path(__file__).resolve().parent.parent
GIB = 1024**3


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's own settings."""
    for name in (
        "SAGE_HOME",
        "SAGE_ENGINE",
        "SAGE_DEFAULT_MODEL",
        "SAGE_POLL_SECONDS",
        "SAGE_JOBS_PER_GPU",
        "SAGE_TRAIN_PROCESSES",
        "SAGE_TRAIN_CPUS",
        "VLLM_CPU_OMP_THREADS_BIND",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose home is a fresh folder."""
    return Settings.load(home=tmp_path / "home")


@pytest.fixture
def engines() -> FakeEngines:
    """The scripted engine factory the `services` fixture builds engines with."""
    return FakeEngines()


@pytest.fixture
def services(settings: Settings, engines: FakeEngines) -> Services:
    """Services over a fresh home, with fixed resource figures (no GPU), the scripted fake
    engine, no GPUs for the job queue, an empty process table (no real process decides who
    holds a GPU: every GPU process is another's, not visible here) and no built-in model
    provisioned at launch: fast and deterministic for UI tests."""
    built = open_services(
        settings.with_changes(default_model=""),
        monitor=FakeMonitor(no_gpu_snapshot()),
        engine_factory=engines,
        devices=lambda: [],
        processes=TableProcesses(),
    )
    yield built
    built.store.close()


@pytest.fixture(scope="session")
def builtin_model_dir() -> Path:
    """The real built-in model, converted once per machine.

    `make test` provisions it into the default SAGE_HOME first; it is reused from there
    (read-only) and only converted here when that copy is missing or half-written.
    """
    installed = Paths(resolve_home()).model_dir(BUILTIN)
    if is_provisioned(installed):
        return installed
    return provision(BUILTIN_MODELS[BUILTIN], REPO / ".cache" / "models" / BUILTIN)


@pytest.fixture
def provisioned_services(services: Services, builtin_model_dir: Path) -> Services:
    """Services whose home has the built-in model in place (linked, not copied)."""
    services.settings.paths.model_dir(BUILTIN).symlink_to(
        builtin_model_dir, target_is_directory=True
    )
    services.registry.pull(BUILTIN)
    return services


class FakeMonitor:
    """A resource monitor with fixed figures, for deterministic screens."""

    def __init__(self, snapshot: ResourceSnapshot) -> None:
        self.snapshot = snapshot
        self.samples = 0
        self.closed = False

    def sample(self) -> ResourceSnapshot:
        self.samples += 1
        return self.snapshot

    def close(self) -> None:
        self.closed = True


def two_gpu_snapshot() -> ResourceSnapshot:
    """Two H100s, one busy with training."""
    return ResourceSnapshot(
        gpus=(
            GpuSample(
                0,
                "NVIDIA H100 80GB HBM3",
                61 * GIB,
                80 * GIB,
                19 * GIB,
                87,
                (GpuProcess(4242, 60 * GIB, "python"),),
            ),
            GpuSample(1, "NVIDIA H100 80GB HBM3", 2 * GIB, 80 * GIB, 78 * GIB, 0, ()),
        ),
        no_gpu_reason=None,
        cpu_percent=12.0,
        cpu_count=16,
        ram_used=40 * GIB,
        ram_total=128 * GIB,
        taken_at=0.0,
    )


def no_gpu_snapshot() -> ResourceSnapshot:
    """A CPU-only machine."""
    return ResourceSnapshot(
        gpus=(),
        no_gpu_reason="no NVIDIA driver found",
        cpu_percent=25.0,
        cpu_count=2,
        ram_used=3 * GIB,
        ram_total=24 * GIB,
        taken_at=0.0,
    )
