"""The dataset commands: `data check` (the Finetune form's Check) and `data from-docs`.

`data check` prints what Start would do with a dataset, the reason on the last line, and exits
0 when the file can train, 2 when it cannot. The dataset options here are also `finetune`'s,
so a file checked with some options trains with the same ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sage_tui.cli.output import show
from sage_tui.config import Settings
from sage_tui.core.safe_text import for_stream, visible
from sage_tui.errors import SageError

# On a terminal the tokens that carry loss are shown in reverse video; piped, between marks.
_TRAINED_ON, _TRAINED_OFF = "\x1b[7m", "\x1b[27m"
_PIPED_ON, _PIPED_OFF = "\u27e6", "\u27e7"


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how a dataset is read and which tokens carry loss."""
    parser.add_argument("--format", help="dataset format (default: detected)")
    parser.add_argument(
        "--columns",
        default="",
        metavar="STD=YOURS[,...]",
        help="the file's own key names, e.g. instruction=question,output=answer",
    )
    parser.add_argument(
        "--skip-invalid", action="store_true", help="drop bad rows instead of refusing"
    )
    parser.add_argument(
        "--fill",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fill the dataset's {{KEY}} placeholders with VALUE (repeatable)",
    )
    parser.add_argument(
        "--train-on-prompts",
        action="store_true",
        help="every token carries loss, not only the assistant replies",
    )
    parser.add_argument(
        "--strip-special-tokens",
        action="store_true",
        help="remove literal special tokens (<|im_end|>, </s>, ...) from the rows' text",
    )


def dataset_fields(args: argparse.Namespace) -> dict:
    """The JobRequest fields the dataset options set."""
    from sage_tui.core.data.columns import parse_columns

    return {
        "dataset_format": args.format,
        "columns": parse_columns(args.columns) if args.columns.strip() else {},
        "skip_invalid": args.skip_invalid,
        "placeholders": placeholder_values(args.fill),
        "train_on_prompts": args.train_on_prompts,
        "strip_special_tokens": args.strip_special_tokens,
    }


def placeholder_values(fills: list[str]) -> dict[str, str]:
    """`--fill KEY=VALUE` arguments as placeholder values (a repeated key: the last wins)."""
    values: dict[str, str] = {}
    for fill in fills:
        key, equals, value = fill.partition("=")
        if not equals or not key:
            raise SageError(f"--fill {fill!r} must be KEY=VALUE, for example --fill name=Sage")
        values[key] = value
    return values


def how_to_fill(names: list[str]) -> str:
    """The placeholder warning's way out, in the CLI's words."""
    return "pass " + " ".join(f"--fill {name}=VALUE" for name in names)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `data check` and `data from-docs` to the CLI."""
    data = commands.add_parser("data", help="check a dataset, or make one from docs")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="what Start would do with a dataset (exit 2: no)")
    check.add_argument(
        "dataset", help="a .jsonl/.json/.csv/.parquet file, a saved datasets folder or a HF id"
    )
    check.add_argument("--base", help="base model whose tokenizer counts (default: the active)")
    check.add_argument("--max-length", type=int, help="tokens per row (default 1024)")
    add_dataset_options(check)
    docs = actions.add_parser("from-docs", help="a Q&A dataset from a folder of Markdown docs")
    docs.add_argument("folder", type=Path)
    docs.add_argument("-o", "--output", type=Path, help="JSONL to write (default: in the home)")
    docs.add_argument(
        "--model-questions",
        action="store_true",
        help="the active model writes varied questions per section (starts the engine)",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one of the commands added by `add_commands`."""
    from sage_tui.services import open_services
    from sage_tui.studio import Studio

    studio = Studio(open_services(settings))
    if args.data_command == "check":
        return _check(studio, args)
    return _from_docs(studio, settings, args)


def _check(studio, args: argparse.Namespace) -> int:
    from sage_tui.studio.jobs import JobRequest

    request = JobRequest(base=args.base or "", dataset=args.dataset, **dataset_fields(args))
    report = studio.data.check(request, args.max_length, how_to_fill=how_to_fill)
    lines = report.text.split("\n")
    for line in lines[:-1]:
        show(line)
    if report.pieces:
        mark = "in reverse video" if for_stream(sys.stdout) else "between \u27e6 \u27e7"
        show(f"first row as the model sees it, the tokens that carry loss {mark}:")
        print(_marked(report.pieces, terminal=for_stream(sys.stdout)))
    show(lines[-1])
    return 2 if report.refused else 0


def _marked(pieces: list[tuple[str, bool]], *, terminal: bool) -> str:
    """The first row's tokens, those that carry loss marked (reverse video on a terminal)."""
    on, off = (_TRAINED_ON, _TRAINED_OFF) if terminal else (_PIPED_ON, _PIPED_OFF)
    shown = []
    for text, trained in pieces:
        text = visible(text) if terminal else text
        shown.append(f"{on}{text}{off}" if trained else text)
    return "".join(shown)


def _from_docs(studio, settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from sage_tui.terminal import engine_output_to

    def progress(line: str) -> None:
        show(line, file=sys.stderr)

    async def write():
        try:
            if args.model_questions:
                registry = studio.services.registry
                if registry.active_name is None:
                    registry.pull(settings.default_model, progress=progress)
                await studio.engine.start(raise_errors=True)
            return await studio.data.from_docs(
                args.folder,
                output=args.output,
                model_questions=args.model_questions,
                progress=progress,
            )
        finally:
            await studio.shutdown()

    with engine_output_to(settings.paths.engine_log):
        result = asyncio.run(write())
    show(result.note, file=sys.stderr)
    show(str(result.path))
    return 0
