"""What the training runner hands TRL: the `SFTConfig` arguments of a job, and whether the base
model's own code may run.

Both read the job's spec.json, which is not trusted on its own: its expert settings were
checked with the spec (`expert_settings`), and a spec asking to run the base model's code is
checked against the base model's record in the job's home, where only `models import
--trust-remote-code` can allow it.
"""

from __future__ import annotations

from pathlib import Path

from sage_tui.core.training.job_folder import JobFolder
from sage_tui.core.training.spec import JobSpec, SpecError
from sage_tui.paths import TASK_ID, Paths


def sft_arguments(spec: JobSpec, folder: JobFolder, *, cuda: bool, evaluating: bool) -> dict:
    """The `SFTConfig` arguments of a job: the studio's own, then the spec's expert settings
    (`extra`, only names in `expert_settings.EXPERT_SETTINGS`, checked with the spec), which
    may override the defaults below (gradient checkpointing) but nothing the studio relies on:
    where files go, logging, checkpoints, evaluation, the seed."""
    return {
        "output_dir": str(folder.checkpoints),
        "per_device_train_batch_size": spec.batch_size,
        "per_device_eval_batch_size": spec.batch_size,
        "gradient_accumulation_steps": spec.grad_accum,
        "learning_rate": spec.learning_rate,
        "num_train_epochs": spec.epochs,
        "max_steps": spec.max_steps,
        "lr_scheduler_type": spec.lr_scheduler,
        "warmup_steps": spec.warmup_ratio,  # transformers 5: a float below 1 is a ratio
        "max_length": spec.max_length,
        # Recomputing activations saves GPU memory but only costs time on a CPU.
        "gradient_checkpointing": cuda,
        **spec.extra,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": spec.save_steps,
        "save_total_limit": 3,
        "eval_strategy": "steps" if evaluating else "no",
        "eval_steps": spec.save_steps,
        "seed": spec.seed,
        "report_to": [],
        "use_cpu": not cuda,
        # LoRA leaves no trainable parameter unused; searching for them costs every step.
        "ddp_find_unused_parameters": False,
        "trust_remote_code": spec.trust_remote_code,
    }


def check_remote_code(spec: JobSpec, job_dir: Path) -> None:
    """SpecError unless a spec that asks to run the base model's own code is allowed to by
    the base model's record in the job's home (a spec.json is not trusted on its own)."""
    if not spec.trust_remote_code:
        return
    from sage_tui.core.models.registry import remote_code_allowed
    from sage_tui.core.store import Store

    paths = Paths(job_dir.parents[2]) if len(job_dir.parents) > 2 else None
    record = None
    ours = TASK_ID.problem(job_dir.name) is None and paths is not None
    if ours and paths.db.is_file() and paths.job_dir(job_dir.name) == job_dir:
        store = Store(paths.db)
        try:
            record = store.get_model(spec.base_model)
        finally:
            store.close()
    # The record must be for this very folder: a spec.json naming a trusted model could
    # otherwise point base_path at another one.
    if record is None or not remote_code_allowed(record) or record.path != spec.base_path:
        raise SpecError(
            f"{JobFolder(job_dir).spec_file} asks to run the base model's own code, but"
            f" {spec.base_model!r} is not registered with --trust-remote-code in this home"
        )
