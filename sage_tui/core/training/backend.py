""" "Use as backend" (SAGE's 设为后端): a finished job's adapter becomes the chat's model.

The adapter is registered as `sage-finetuned-<task_id>` on the job's base model, as in the SAGE
note, and made the active model. Whoever owns an engine then switches to it (instantly when the
base model is already loaded).
"""

from __future__ import annotations

from sage_tui.core.models.registry import ModelRegistry
from sage_tui.core.store import ModelRecord
from sage_tui.core.training.jobs import Job
from sage_tui.errors import SageError

ADAPTER_PREFIX = "sage-finetuned-"


def adapter_name(task_id: str) -> str:
    """The registered name of a job's adapter."""
    return f"{ADAPTER_PREFIX}{task_id}"


def register_job_adapter(registry: ModelRegistry, job: Job) -> ModelRecord:
    """Register the adapter of a completed job (again, if it was retrained)."""
    if job.status != "completed":
        raise SageError(f"job {job.id} is {job.status}, not completed: nothing to use yet")
    if not job.folder.has_adapter():
        raise SageError(f"job {job.id} has no adapter in {job.output_dir}")
    # Registered before and renamed since: it keeps the name the user gave it.
    folder = str(job.folder.path.absolute())
    known = next((m.name for m in registry.adapters_of(job.base_model) if m.path == folder), None)
    return registry.register_adapter(known or adapter_name(job.id), job.folder.path, job.base_model)
