"""Fine-tuning use cases: check a dataset, prepare a job, submit, cancel, resume, delete, poll.

Every front end (the CLI, the Finetune screen, the HTTP API) hands a :class:`JobRequest` in
the user's terms and gets back a checked :class:`PreparedJob`: one validation path for the
dataset, the preset, the placeholders, the GPUs and the task id, so the same inputs give the
same `spec.json` whoever typed them. Methods block (disk, database, processes): front ends call
them from threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sage_tui.core.data import DatasetError, invalid_rows_message
from sage_tui.core.models.registry import remote_code_allowed
from sage_tui.core.training.backend import register_job_adapter
from sage_tui.core.training.jobs import Job, JobStatus
from sage_tui.core.training.memory_estimate import TrainingMemory
from sage_tui.core.training.memory_fit import (
    FitVerdict,
    GpuRoom,
    job_memory,
    judge_fit,
    memory_for,
)
from sage_tui.core.training.placement import parse_gpus
from sage_tui.core.training.spec import PRESETS, JobSpec, Preset, SpecError, preset_for
from sage_tui.core.training.supervisor import JobError
from sage_tui.errors import SageError
from sage_tui.studio.datasets import DataDesk, DatasetCheck
from sage_tui.studio.job_detail import JobDetail, JobDetails
from sage_tui.studio.state import JobEnded, JobsChanged, ModelsChanged, Observers

if TYPE_CHECKING:
    from sage_tui.core.store import ModelRecord
    from sage_tui.services import Services


JOB_DEFAULTS = JobSpec(task_id="x", base_model="", base_path="", dataset="")
"""A spec's own defaults, under the preset's values (for an estimate before prepare)."""


def default_task_id() -> str:
    """A new job's name when none is given: ft-<date>-<time>."""
    return time.strftime("ft-%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class JobRequest:
    """A new job as a user describes it, before any checking."""

    base: str
    """Registered base model name."""
    dataset: str | Path
    task_id: str = ""
    """Empty: ft-<date>-<time>."""
    preset: str | None = None
    """A preset name; None: chosen from the GPUs' free memory."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Spec fields the user set (lora_r, learning_rate, ...); they override the preset."""
    gpus: str | Sequence[int] = ""
    """GPUs to pin to: "1", "0,1" or a list; empty: any free one."""
    placeholders: Mapping[str, str] = field(default_factory=dict)
    dataset_format: str | None = None
    skip_invalid: bool = False
    columns: Mapping[str, str] = field(default_factory=dict)
    """The file's own key names for the standard ones: {"instruction": "question", ...}."""
    train_on_prompts: bool = False
    """Train on every token, not only the assistant replies."""
    strip_special_tokens: bool = False
    """Remove literal special tokens (`<|im_end|>`, `</s>`, ...) from the rows' text."""


@dataclass(frozen=True)
class PreparedJob:
    """A checked job, ready to submit."""

    spec: JobSpec
    dataset: DatasetCheck
    preset: Preset
    fit: FitVerdict | None = None
    """The memory estimate against the free memory now (None: the base model's shape could
    not be read); `fit.line` is what the form and the CLI show."""


def build_spec(
    request: JobRequest, base: ModelRecord, check: DatasetCheck, preset: Preset
) -> JobSpec:
    """The spec for a request: preset values, then the user's settings, checked.

    A rank set without an alpha gets alpha = 2 x rank, as the presets have it.
    """
    values = dict(preset.values)
    settings = {k: v for k, v in request.settings.items() if v is not None}
    if "trust_remote_code" in settings:
        raise SpecError(
            "trust_remote_code is not a job setting: it follows the base model's record"
            " (sage-tui models import ... --trust-remote-code)"
        )
    if "lora_r" in settings and "lora_alpha" not in settings:
        settings["lora_alpha"] = 2 * int(settings["lora_r"])
    values.update(settings)
    try:
        gpus = parse_gpus(request.gpus) if isinstance(request.gpus, str) else list(request.gpus)
    except ValueError as err:
        raise SpecError(str(err)) from None
    try:
        spec = JobSpec(
            task_id=request.task_id.strip() or default_task_id(),
            base_model=base.name,
            base_path=base.path,
            dataset=str(check.loaded.path),
            dataset_format=check.loaded.format.value,
            skip_invalid=request.skip_invalid,
            placeholders=dict(request.placeholders),
            columns=dict(request.columns),
            train_on_prompts=request.train_on_prompts,
            strip_special_tokens=request.strip_special_tokens,
            gpus=gpus,
            trust_remote_code=remote_code_allowed(base),
            **values,
        )
    except TypeError as err:
        raise SpecError(f"unknown setting: {err}") from None
    return spec.check()


class JobDesk:
    """The fine-tuning use cases over the services' supervisor and registry."""

    def __init__(
        self, services: Services, observers: Observers, data: DataDesk | None = None
    ) -> None:
        self.services = services
        self.data = data or DataDesk(services)
        self.supervisor = services.supervisor
        self._observers = observers
        self._statuses: dict[str, JobStatus] | None = None
        self._details = JobDetails()

    # -- new jobs ---------------------------------------------------------------------------

    def preset_for_host(self) -> Preset:
        """The preset the GPUs' free memory suggests (cpu without GPUs)."""
        snapshot = self.services.monitor.sample()
        return preset_for([gpu.memory_free for gpu in snapshot.gpus])

    def prepare(self, request: JobRequest) -> PreparedJob:
        """Check everything about a new job without creating anything.

        SageError (SpecError, DatasetError, ModelError) naming the first problem.
        """
        registry = self.services.registry
        base = registry.get(request.base)
        if base.kind != "base":
            raise SpecError(
                f"{request.base} is an adapter; fine-tune its base model {base.base_model}"
            )
        if not str(request.dataset).strip():
            raise SpecError("enter a dataset path")
        if request.preset is not None and request.preset not in PRESETS:
            raise SpecError(
                f"unknown preset {request.preset!r}; choose one of {', '.join(PRESETS)}"
            )
        preset = PRESETS[request.preset] if request.preset else self.preset_for_host()
        # The Check's own path: Start refuses exactly what the Check refuses.
        report = self.data.check(request)
        if report.check is None or report.error is not None:
            raise DatasetError(report.error or "the dataset cannot be read")
        check = report.check
        if check.refused:
            loaded = check.loaded
            raise DatasetError(
                invalid_rows_message(
                    str(loaded.path), loaded.problems, loaded.total_rows, loaded.skipped
                )
            )
        spec = build_spec(request, base, check, preset)
        fit = self.fit(spec)
        if fit is not None and fit.refusal is not None:
            raise SpecError(f"job {spec.task_id} cannot fit: {fit.refusal}")
        return PreparedJob(spec, check, preset, fit)

    def fit(self, spec: JobSpec) -> FitVerdict | None:
        """Will `spec` fit: its memory estimate against the free memory of the GPUs it may
        use (per GPU for DDP), or the host's RAM without GPUs (the monitor's sample now).

        None when the base model's shape cannot be read (the job is not held on a guess).
        Blocking: reads the base model's config and safetensors headers."""
        return self._judge(lambda cuda: job_memory(spec, cuda=cuda), spec.gpus)

    def estimate(self, request: JobRequest) -> FitVerdict | None:
        """The memory line of a job not yet prepared (the form's, as it is typed): the
        request's base model, preset and settings, no dataset read. None while the base
        model is unknown or its shape cannot be read; SpecError for GPUs typed wrong."""
        try:
            base = self.services.registry.get(request.base)
        except SageError:
            return None
        preset = PRESETS.get(request.preset or "") or self.preset_for_host()
        values = {**vars(JOB_DEFAULTS), **preset.values}
        values.update({k: v for k, v in request.settings.items() if v is not None})
        try:
            gpus = parse_gpus(request.gpus) if isinstance(request.gpus, str) else request.gpus
        except ValueError as err:
            raise SpecError(str(err)) from None
        return self._judge(
            lambda cuda: memory_for(
                base.path,
                lora_r=int(values["lora_r"]),
                target_modules=values["target_modules"],
                batch_size=int(values["batch_size"]),
                max_length=int(values["max_length"]),
                extra=dict(values.get("extra") or {}),
                cuda=cuda,
            ),
            list(gpus),
        )

    def _judge(
        self, estimate: Callable[[bool], TrainingMemory], pinned: Sequence[int]
    ) -> FitVerdict | None:
        snapshot = self.services.monitor.sample()
        try:
            memory = estimate(bool(snapshot.gpus))
        except (SageError, OSError, ValueError):
            return None
        rooms = [GpuRoom(g.index, g.memory_free, g.memory_total) for g in snapshot.gpus]
        return judge_fit(
            memory,
            rooms,
            pinned,
            ram_free=max(0, snapshot.ram_total - snapshot.ram_used),
            ram_total=snapshot.ram_total,
        )

    def submit(self, prepared: PreparedJob | JobRequest) -> Job:
        """Create and start a job (it stays queued while others use every slot)."""
        if isinstance(prepared, JobRequest):
            prepared = self.prepare(prepared)
        return self.supervisor.submit(prepared.spec)

    # -- existing jobs ----------------------------------------------------------------------

    def get(self, task_id: str) -> Job:
        return self.supervisor.get(task_id)

    def list(self) -> list[Job]:
        return self.supervisor.list()

    def cancel(self, task_id: str) -> Job:
        """Stop a job (a running one saves a checkpoint first); blocks until it ended."""
        job = self.supervisor.cancel(task_id)
        self.poll()
        return job

    def resume(self, task_id: str) -> Job:
        """Continue a job from its last checkpoint."""
        job = self.supervisor.start(task_id, resume=True)
        self.poll()
        return job

    def delete(self, task_id: str) -> None:
        """Remove a job that is not running, and its folder (a broken job too)."""
        self._details.forget(task_id)
        self.supervisor.delete(task_id)
        self.poll()

    def detail(self, task_id: str) -> JobDetail:
        """The job's step losses and log tail, reading only the events appended since the
        last call for this job (the Finetune screen asks at every step)."""
        return self._details.read(self.supervisor.get(task_id))

    def adapter_for_use(self, name: str) -> str:
        """The model name to chat with for `name`: a job's adapter (registered now, again if it
        was retrained) or a registered model's own name."""
        try:
            job = self.supervisor.get(name)
        except JobError:
            self.services.registry.get(name)  # ModelError listing what is registered
            return name
        record = register_job_adapter(self.services.registry, job)
        self._observers.publish(ModelsChanged())
        return record.name

    # -- following --------------------------------------------------------------------------

    def poll(self) -> list[Job]:
        """Follow the jobs once (re-attaching on the first call); publish what changed."""
        if self._statuses is None:
            self.supervisor.reattach()
        else:
            self.supervisor.poll()
        jobs = self.supervisor.list()
        self.services.engines.cpu_jobs_running = any(
            job.status is JobStatus.RUNNING and job.gpus == () for job in jobs
        )
        before, self._statuses = self._statuses, {job.id: job.status for job in jobs}
        self._observers.publish(JobsChanged(tuple(jobs)))
        if before is not None:  # endings from before this launch are not news
            for job in jobs:
                if job.status.ended and before.get(job.id) != job.status:
                    self._observers.publish(JobEnded(job))
        return jobs
