"""The composition root: parse arguments, build settings and services, run the App or a command.

`sage-tui` with no command opens the studio; every other command is its headless twin for
scripts and servers without a TTY. Nothing heavy is imported here: the App module is imported
only when the studio opens, torch only inside the commands that need it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sage_tui import __version__
from sage_tui.config import ENGINES, Settings
from sage_tui.errors import SageError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="sage-tui",
        description="Fine-tune a model with LoRA, use it as the chat backend, chat with it.",
    )
    parser.add_argument("--version", action="version", version=f"sage-tui {__version__}")
    parser.add_argument("--home", help="data folder (default $SAGE_HOME or ~/.sage)")
    parser.add_argument("--engine", choices=ENGINES, help="inference engine (default auto)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("doctor", help="show what sage-tui finds on this machine")

    models = commands.add_parser("models", help="list, pull, import or remove models")
    models_cmd = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    models_cmd.add_parser("list", help="registered base models and adapters")
    pull = models_cmd.add_parser("pull", help="provision a built-in model")
    pull.add_argument("name", help="built-in model name, e.g. smollm2-135m-instruct")
    imp = models_cmd.add_parser("import", help="register a local model folder or a HF id")
    imp.add_argument("source", help="a model folder, or a Hugging Face id like Qwen/Qwen2.5-0.5B")
    imp.add_argument("--name", help="name to register it under (default: from the source)")
    rm = models_cmd.add_parser("remove", help="forget a model (its files stay)")
    rm.add_argument("name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sage-tui` script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(home=args.home, engine=args.engine)
        if args.command == "doctor":
            return _doctor(settings)
        if args.command == "models":
            return _models(settings, args)
        return _run_app(settings)
    except SageError as err:
        print(f"sage-tui: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _doctor(settings: Settings) -> int:
    from sage_tui.core.doctor import run_checks, usable

    checks = run_checks(settings)
    marks = {True: "ok  ", False: "FAIL", None: "note"}
    width = max(len(c.name) for c in checks)
    for check in checks:
        print(f"[{marks[check.ok]}] {check.name:<{width}}  {check.detail}")
    ok = usable(checks)
    print(
        "sage-tui is ready to use."
        if ok
        else "sage-tui cannot run here until the FAIL lines are fixed."
    )
    return 0 if ok else 1


def _models(settings: Settings, args: argparse.Namespace) -> int:
    from sage_tui.services import open_services

    services = open_services(settings)
    registry = services.registry

    def say(line: str) -> None:  # progress goes to stderr, results to stdout
        print(line, file=sys.stderr)

    if args.models_command == "list":
        active = registry.active_name
        for model in registry.list():
            mark = "*" if model.name == active else " "
            base = f"  (adapter of {model.base_model})" if model.base_model else ""
            print(f"{mark} {model.name:<32} {model.kind:<7} {model.source:<8} {model.path}{base}")
    elif args.models_command == "pull":
        record = registry.pull(args.name, progress=say)
        print(f"{record.name} registered: {record.path}")
    elif args.models_command == "import":
        record = registry.import_model(args.source, name=args.name, progress=say)
        print(f"{record.name} registered: {record.path}")
    elif args.models_command == "remove":
        registry.remove(args.name)
        print(f"{args.name} removed from the registry (its files stay on disk)")
    return 0


def _run_app(settings: Settings) -> int:
    from sage_tui.services import open_services
    from sage_tui.ui.app import SageApp

    services = open_services(settings)
    SageApp(services).run()
    return 0
