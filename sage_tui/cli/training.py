"""The headless fine-tuning commands: `finetune`, `jobs ...` and `use`.

`finetune` checks the dataset and the settings before anything is created, so a refused job
leaves nothing behind; the job itself runs in its own process and keeps running after this
command exits, unless `--wait` follows it to the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sage_tui.config import Settings
from sage_tui.errors import SageError

JOB_FLAGS = {
    # flag: (spec field, type, help)
    "--epochs": ("epochs", float, "passes over the data"),
    "--max-steps": ("max_steps", int, "stop after this many optimiser steps"),
    "--lr": ("learning_rate", float, "learning rate"),
    "--rank": ("lora_r", int, "LoRA rank (one vLLM serves: 8, 16, 32, 64, ...)"),
    "--alpha": ("lora_alpha", int, "LoRA alpha"),
    "--dropout": ("lora_dropout", float, "LoRA dropout"),
    "--batch-size": ("batch_size", int, "rows per device step"),
    "--grad-accum": ("grad_accum", int, "gradient accumulation steps"),
    "--max-length": ("max_length", int, "tokens per row (longer rows are cut)"),
    "--eval-fraction": ("eval_fraction", float, "share of rows held out for eval loss"),
    "--seed": ("seed", int, "random seed"),
    "--save-steps": ("save_steps", int, "checkpoint every N steps"),
}


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `finetune`, `jobs` and `use` to the CLI."""
    ft = commands.add_parser("finetune", help="start a LoRA fine-tuning job")
    ft.add_argument("--base", required=True, help="registered base model")
    ft.add_argument("--data", required=True, type=Path, help="dataset (.jsonl, .json, .csv)")
    ft.add_argument("--name", help="task id (default: ft-<date>-<time>)")
    ft.add_argument("--preset", choices=("cpu", "small-gpu", "large-gpu"), help="start values")
    ft.add_argument("--format", help="dataset format (default: detected)")
    ft.add_argument("--skip-invalid", action="store_true", help="drop bad rows instead of refusing")
    ft.add_argument(
        "--fill",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fill the dataset's {{KEY}} placeholders with VALUE (repeatable)",
    )
    for flag, (_, kind, text) in JOB_FLAGS.items():
        ft.add_argument(flag, type=kind, help=text)
    ft.add_argument(
        "--gpu",
        metavar="N[,M]",
        default="",
        help="run on these GPUs, numbered as nvidia-smi numbers them (default: a free one)",
    )
    ft.add_argument("--wait", action="store_true", help="follow the job until it ends")

    jobs = commands.add_parser("jobs", help="list, show, follow, cancel or resume jobs")
    actions = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="every job, newest first")
    for name, text in (("show", "a job's settings and progress"), ("logs", "a job's train.log")):
        actions.add_parser(name, help=text).add_argument("id")
    actions.add_parser("cancel", help="stop a job (final checkpoint kept)").add_argument("id")
    resume = actions.add_parser("resume", help="continue a job from its last checkpoint")
    resume.add_argument("id")
    resume.add_argument("--wait", action="store_true")

    use = commands.add_parser("use", help="make a finished job's adapter (or a model) active")
    use.add_argument("id", help="a task id or a registered model name")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one of the commands added by `add_commands`."""
    from sage_tui.core.training.supervisor import Supervisor
    from sage_tui.services import open_services

    services = open_services(settings)
    supervisor = Supervisor(services.store, settings.paths, jobs_per_device=settings.jobs_per_gpu)
    supervisor.reattach()
    if args.command == "finetune":
        return _finetune(services, supervisor, args)
    if args.command == "use":
        return _use(services, supervisor, args.id)
    job_id = getattr(args, "id", None)
    action = args.jobs_command
    if action == "list":
        _print_jobs(supervisor.list())
    elif action == "show":
        _show(supervisor.get(job_id))
    elif action == "logs":
        log = Path(supervisor.get(job_id).output_dir) / "train.log"
        sys.stdout.write(log.read_text(encoding="utf-8", errors="replace") if log.exists() else "")
    elif action == "cancel":
        job = supervisor.cancel(job_id)
        print(f"{job.id}: {job.status}")
    elif action == "resume":
        job = supervisor.start(job_id, resume=True)
        print(f"{job.id}: {job.status}")
        if args.wait:
            return _wait(supervisor, job.id)
    return 0


def _finetune(services, supervisor, args: argparse.Namespace) -> int:
    from sage_tui.core.data.placeholders import is_placeholder_warning
    from sage_tui.core.data import find_placeholders, load_dataset_file
    from sage_tui.core.training.placement import parse_gpus
    from sage_tui.core.training.spec import PRESETS, JobSpec, preset_for

    placeholders = _placeholder_values(args.fill)
    try:
        gpus = parse_gpus(args.gpu)
    except ValueError as err:
        raise SageError(f"--gpu: {err}") from None
    base = services.registry.get(args.base)
    if base.kind != "base":
        raise SageError(f"{args.base} is an adapter; fine-tune its base model {base.base_model}")
    data = args.data.expanduser().absolute()
    # Refuse a bad dataset now, before a job folder exists.
    loaded = load_dataset_file(
        data, fmt=args.format, skip_invalid=args.skip_invalid, placeholders=placeholders
    )
    unfilled = find_placeholders(loaded.examples)
    for warning in loaded.warnings:
        # Only a warning: braces in a dataset may be meant, so the job still starts.
        if unfilled and is_placeholder_warning(warning):
            warning += " (pass " + " ".join(f"--fill {name}=VALUE" for name in unfilled) + ")"
        print(f"warning: {warning}", file=sys.stderr)
    if loaded.skipped:
        print(f"skipping {loaded.skipped} invalid rows of {loaded.total_rows}", file=sys.stderr)
    if args.preset:
        preset = PRESETS[args.preset]
    else:
        snapshot = services.monitor.sample()
        preset = preset_for([g.memory_free for g in snapshot.gpus])
    values = dict(preset.values)
    values.update(
        {
            field: getattr(args, flag[2:].replace("-", "_"))
            for flag, (field, _, _) in JOB_FLAGS.items()
            if getattr(args, flag[2:].replace("-", "_")) is not None
        }
    )
    spec = JobSpec(
        task_id=args.name or time.strftime("ft-%Y%m%d-%H%M%S"),
        base_model=base.name,
        base_path=base.path,
        dataset=str(data),
        dataset_format=loaded.format.value,
        skip_invalid=args.skip_invalid,
        placeholders=placeholders,
        gpus=gpus,
        **values,
    )
    job = supervisor.submit(spec)
    print(job.id)
    where = f"on {job.placement}" if job.placement else "waits for a free GPU or slot"
    print(
        f"{job.id}: {job.status}, {where} ({preset.name} preset, {len(loaded.examples)} rows,"
        f" log: {Path(job.output_dir) / 'train.log'})",
        file=sys.stderr,
    )
    return _wait(supervisor, job.id) if args.wait else 0


def _placeholder_values(fills: list[str]) -> dict[str, str]:
    """`--fill KEY=VALUE` arguments as placeholder values (a repeated key: the last wins)."""
    values: dict[str, str] = {}
    for fill in fills:
        key, equals, value = fill.partition("=")
        if not equals or not key:
            raise SageError(f"--fill {fill!r} must be KEY=VALUE, for example --fill name=Sage")
        values[key] = value
    return values


def _wait(supervisor, job_id: str) -> int:
    """Follow a job to its end, one progress line per step on stderr."""
    last_step = None
    while True:
        supervisor.poll()
        job = supervisor.get(job_id)
        if job.step is not None and job.step != last_step:
            last_step = job.step
            print(_progress_line(job), file=sys.stderr)
        if not job.active:
            break
        time.sleep(1.0)
    print(f"{job.id}: {job.status}" + (f": {job.error}" if job.error else ""), file=sys.stderr)
    return 0 if job.status == "completed" else 1


def _progress_line(job) -> str:
    parts = [f"step {job.step}/{job.total_steps or '?'}"]
    if job.last_loss is not None:
        parts.append(f"loss {job.last_loss:.4f}")
    if job.tokens_per_second:
        parts.append(f"{job.tokens_per_second:.0f} tokens/s")
    if job.eta_seconds:
        parts.append(f"ETA {job.eta_seconds:.0f} s")
    return "  ".join(parts)


def _print_jobs(jobs) -> None:
    for job in jobs:
        progress = f"{job.progress:4.0%}" if job.progress is not None else "   -"
        loss = f"{job.last_loss:.4f}" if job.last_loss is not None else "-"
        created = time.strftime("%m-%d %H:%M", time.localtime(job.created_at))
        where = job.placement or "-"
        print(
            f"{job.id:<28} {job.status:<11} {where:<8} {progress} loss {loss:<8}"
            f" {job.base_model:<24}",
            created,
        )


def _show(job) -> None:
    print(f"job {job.id}: {job.status}" + (f" ({job.error})" if job.error else ""))
    if job.step is not None:
        print(f"  progress  {_progress_line(job)}")
    print(f"  output    {job.output_dir}")
    for key, value in sorted(vars(job.spec).items()):
        print(f"  {key:<16} {value}")


def _use(services, supervisor, name: str) -> int:
    from sage_tui.core.training.backend import register_job_adapter
    from sage_tui.core.training.supervisor import JobError

    registry = services.registry
    try:
        job = supervisor.get(name)
    except JobError:
        job = None
    if job is not None:
        name = register_job_adapter(registry, job).name
    record = registry.set_active(name, services.engines.engine_kind)
    where = f"adapter of {record.base_model}" if record.kind == "adapter" else "base model"
    print(f"{record.name} is now the chat's model ({where})")
    return 0
