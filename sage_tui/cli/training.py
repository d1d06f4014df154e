"""The headless fine-tuning commands: `finetune`, `jobs ...` and `use`.

`finetune` checks the dataset and the settings before anything is created, so a refused job
leaves nothing behind; the job itself runs in its own process and keeps running after this
command exits, unless `--wait` follows it to the end.
"""

from __future__ import annotations

import argparse
import sys
import time

from sage_tui.cli.data import add_dataset_options, dataset_fields, how_to_fill
from sage_tui.cli.output import show, show_bytes
from sage_tui.config import Settings
from sage_tui.errors import SageError
from sage_tui.studio.formatting import job_cells, job_summary, probe_lines, progress_line

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
    "--probe-max-tokens": ("probe_max_tokens", int, "tokens each probe answer may have (48)"),
}


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `finetune`, `jobs` and `use` to the CLI."""
    ft = commands.add_parser("finetune", help="start a LoRA fine-tuning job")
    ft.add_argument("--base", required=True, help="registered base model")
    ft.add_argument(
        "--data",
        required=True,
        help="dataset: a .jsonl/.json/.csv/.parquet file, a saved datasets folder or a HF id",
    )
    ft.add_argument("--name", help="task id (default: ft-<date>-<time>)")
    ft.add_argument("--preset", choices=("cpu", "small-gpu", "large-gpu"), help="start values")
    add_dataset_options(ft)
    for flag, (_, kind, text) in JOB_FLAGS.items():
        ft.add_argument(flag, type=kind, help=text)
    ft.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an expert TRL setting, VALUE in JSON (e.g. weight_decay=0.01); an unknown NAME is"
        " refused with the list of allowed ones (repeatable)",
    )
    ft.add_argument(
        "--gpu",
        metavar="N[,M]",
        default="",
        help="run on these GPUs, numbered as nvidia-smi numbers them (default: a free one)",
    )
    ft.add_argument(
        "--probe",
        action="append",
        default=[],
        metavar="PROMPT",
        help="a prompt the model answers at step 0 and after each checkpoint, so the answers"
        " show what it learns (repeatable, up to 5; slows training on CPU)",
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
    from sage_tui.services import open_services
    from sage_tui.studio import Studio

    studio = Studio(open_services(settings))
    jobs = studio.jobs
    jobs.poll()  # re-attach: settle jobs whose process ended since the last look
    if args.command == "finetune":
        return _finetune(studio, args)
    if args.command == "use":
        record = studio.use_without_engine(args.id)
        where = f"adapter of {record.base_model}" if record.kind == "adapter" else "base model"
        show(f"{record.name} is now the chat's model ({where})")
        return 0
    action = args.jobs_command
    if action == "list":
        for job in jobs.list():
            cells = job_cells(job)
            created = time.strftime("%m-%d %H:%M", time.localtime(job.created_at))
            show(
                f"{cells.id:<28} {cells.status:<11} {cells.where:<8} {cells.steps:<14}"
                f" loss {cells.loss:<8} {job.base_model:<24} {created}"
            )
    elif action == "show":
        job = jobs.get(args.id)
        show(job_summary(job))
        show(f"  output    {job.output_dir}")
        for key, value in sorted(vars(job.spec).items()):
            show(f"  {key:<16} {value}")
        for line in probe_lines(jobs.detail(job.id).probes):
            show(line)
    elif action == "logs":
        log = jobs.get(args.id).folder.log_file
        # The log's bytes when piped; on a terminal, made visible (they may not be UTF-8).
        show_bytes(log.read_bytes() if log.exists() else b"")
    elif action == "cancel":
        job = jobs.cancel(args.id)
        show(f"{job.id}: {job.status}")
    elif action == "resume":
        job = jobs.resume(args.id)
        show(f"{job.id}: {job.status}")
        if args.wait:
            return _wait(studio, job.id)
    return 0


def _finetune(studio, args: argparse.Namespace) -> int:
    from sage_tui.studio.jobs import JobRequest

    request = JobRequest(
        base=args.base,
        dataset=args.data,
        task_id=args.name or "",
        preset=args.preset,
        settings={
            **{
                field: getattr(args, _dest(flag))
                for flag, (field, _, _) in JOB_FLAGS.items()
                if getattr(args, _dest(flag)) is not None
            },
            **({"extra": _expert_values(args.extra)} if args.extra else {}),
            **({"probes": tuple(args.probe)} if args.probe else {}),
        },
        gpus=_gpus(args.gpu),
        **dataset_fields(args),
    )
    prepared = studio.jobs.prepare(request)
    check = prepared.dataset
    for warning in check.warnings(how_to_fill):
        show(f"warning: {warning}", file=sys.stderr)
    if check.loaded.skipped:
        show(check.verdict, file=sys.stderr)
    job = studio.jobs.submit(prepared)  # a refusal here is the only line on stderr
    if prepared.fit is not None:
        show(prepared.fit.line, file=sys.stderr)
        for note in (prepared.fit.warning, prepared.fit.wait):
            if note:
                show(f"warning: {note}", file=sys.stderr)
    show(job.id)
    where = f"on {job.placement}" if job.placement else "waits for a free GPU or slot"
    show(
        f"{job.id}: {job.status}, {where} ({prepared.preset.name} preset,"
        f" {check.loaded.usable} rows, log: {job.folder.log_file})",
        file=sys.stderr,
    )
    return _wait(studio, job.id) if args.wait else 0


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _gpus(text: str) -> list[int]:
    from sage_tui.core.training.placement import parse_gpus

    try:
        return parse_gpus(text)
    except ValueError as err:
        raise SageError(f"--gpu: {err}") from None


def _expert_values(pairs: list[str]) -> dict[str, object]:
    """`--extra NAME=VALUE` arguments as expert settings: VALUE read as JSON (0.01, true,
    "cosine"), else as the text it is. Which names and values are allowed is the spec's to say."""
    import json

    values: dict[str, object] = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        if not equals or not name:
            raise SageError(f"--extra {pair!r} must be NAME=VALUE, for example weight_decay=0.01")
        try:
            values[name] = json.loads(text)
        except ValueError:
            values[name] = text
    return values


def _wait(studio, job_id: str) -> int:
    """Follow a job to its end, one progress line per step on stderr, and each new round of
    its probes' answers."""
    last_step, rounds = None, 0
    while True:
        studio.jobs.poll()
        job = studio.jobs.get(job_id)
        stepped = job.progress.step is not None and job.progress.step != last_step
        if stepped:
            last_step = job.progress.step
            show(progress_line(job), file=sys.stderr)
        if job.spec.probes and (stepped or not job.active):
            probes = studio.jobs.detail(job_id).probes
            if len(probes) > rounds:
                rounds = len(probes)
                for line in probe_lines(probes):
                    show(line, file=sys.stderr)
        if not job.active:
            break
        time.sleep(1.0)
    show(f"{job.id}: {job.status}" + (f": {job.error}" if job.error else ""), file=sys.stderr)
    return 0 if job.status == "completed" else 1
