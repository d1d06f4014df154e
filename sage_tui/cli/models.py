"""`sage-tui models ...`: the Models screen's twins (list, show, use, remove, merge, export,
import, rename, and pull for a built-in model). Results on stdout, progress on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from sage_tui.cli.output import show
from sage_tui.config import Settings


def _say(line: str) -> None:
    show(line, file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list, show, use, merge, export, import models")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="registered base models and their adapters")
    listing.add_argument("--json", action="store_true", help="one JSON object per model")
    details = actions.add_parser("show", help="one model's details")
    details.add_argument("name")
    details.add_argument("--json", action="store_true")
    actions.add_parser("use", help="make a model the chat's model").add_argument("name")
    pull = actions.add_parser("pull", help="provision a built-in model")
    pull.add_argument("name", help="built-in model name, e.g. smollm2-135m-instruct")
    imp = actions.add_parser("import", help="register a model folder, a HF id or an adapter")
    imp.add_argument("source", help="a model or adapter folder, or a Hugging Face id")
    imp.add_argument("--name", help="name to register it under (default: from the source)")
    imp.add_argument("--base", help="an adapter's base model (default: the one it names)")
    imp.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own Python code to run when it is loaded (off by default)",
    )
    for name in ("remove", "delete"):
        rm = actions.add_parser(name, help="delete a model (files only where the studio made them)")
        rm.add_argument("name")
    merge = actions.add_parser("merge", help="merge an adapter into its base as a new model")
    merge.add_argument("adapter")
    merge.add_argument("--name", help="the merged model's name (default ADAPTER-merged)")
    export = actions.add_parser("export", help="copy a model to a folder, with a README card")
    export.add_argument("name")
    export.add_argument("dir", type=Path)
    rename = actions.add_parser("rename", help="rename a model (its adapters stay attached)")
    rename.add_argument("old")
    rename.add_argument("new")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from sage_tui.services import open_services
    from sage_tui.studio import Studio

    studio = Studio(open_services(settings))
    desk = studio.models
    action = args.models_command
    if action == "list":
        _list(studio, args.json)
    elif action == "show":
        _show(studio, args.name, args.json)
    elif action == "use":
        record = studio.use_without_engine(args.name)
        show(f"{record.name} is the chat's model (the next engine that starts loads it)")
    elif action == "pull":
        record = studio.services.registry.pull(args.name, progress=_say)
        show(f"{record.name} registered: {record.path}")
    elif action == "import":
        record = desk.import_model(
            args.source,
            args.name,
            base=args.base,
            trust_remote_code=args.trust_remote_code,
            progress=_say,
        )
        of = f" (adapter of {record.base_model})" if record.base_model else ""
        show(f"{record.name} registered{of}: {record.path}")
    elif action in ("remove", "delete"):
        show(desk.delete(args.name))
    elif action == "merge":
        record = desk.merge(args.adapter, args.name, progress=_say)
        show(f"{record.name} registered: {record.path}")
    elif action == "export":
        folder = desk.export(args.name, args.dir, progress=_say)
        show(f"{args.name} exported to {folder}")
    elif action == "rename":
        record = desk.rename(args.old, args.new)
        show(f"{args.old} is now {record.name}")
    return 0


def _list(studio, as_json: bool) -> None:
    active = studio.services.registry.active_name
    for base, adapters in studio.models.tree():
        for record in (base, *adapters):
            if as_json:
                show(json.dumps({**asdict(record), "active": record.name == active}))
                continue
            mark = "*" if record.name == active else " "
            indent = "  " if record.kind == "adapter" else ""
            label = f"{indent}{record.name}"
            show(f"{mark} {label:<34} {record.kind:<7} {record.source:<8} {record.path}")


def _show(studio, name: str, as_json: bool) -> None:
    from sage_tui.studio.model_card import detail_lines

    details = studio.models.details(name)
    record, facts, job = details.record, details.facts, details.job
    if as_json:
        data = {
            "model": asdict(record),
            "active": details.active,
            "facts": asdict(facts),
            "job": None if job is None else {"id": job.id, "dataset": job.dataset},
            "standing": None if details.standing is None else asdict(details.standing),
            "adapters": list(details.adapters),
        }
        show(json.dumps(data, indent=2, default=str))
        return
    for label, value in detail_lines(details):
        show(f"{label:<16} {value}")
