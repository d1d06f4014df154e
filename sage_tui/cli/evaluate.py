"""`sage-tui eval`: a job's held-out rows (or a named file) answered by the base model and the
job's adapter (or by `--models A,B`), scored against the references, and the references'
loss and perplexity under each model; a table or `--json`."""

from __future__ import annotations

import argparse

from sage_tui.cli.output import show
from sage_tui.config import Settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `eval` to the CLI."""
    evaluate = commands.add_parser(
        "eval", help="score a job's adapter against its base on held-out rows or a file"
    )
    evaluate.add_argument("job", nargs="?", help="a job's id (its base and its adapter)")
    evaluate.add_argument("--data", help="the rows to evaluate on (default: the job's held out)")
    evaluate.add_argument("--models", help="2-4 models of one base, comma-separated, instead")
    evaluate.add_argument("--max-rows", type=int, default=50)
    evaluate.add_argument("--max-tokens", type=int, default=128)
    evaluate.add_argument("--json", action="store_true", help="every row and score as JSON")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Evaluate; print the mean of each score per model (or everything as JSON)."""
    import asyncio

    from sage_tui.core.engines.base import Sampling
    from sage_tui.core.scores import METRICS
    from sage_tui.services import open_services
    from sage_tui.studio import Studio
    from sage_tui.studio.evaluation import LIKELIHOOD
    from sage_tui.terminal import engine_output_to

    models = [name.strip() for name in args.models.split(",")] if args.models else None
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens).check()
    studio = Studio(open_services(settings))
    desk = studio.evaluation
    desk.plan(args.job, args.data, models, args.max_rows)  # refused before the engine starts

    async def evaluate():
        try:
            return await desk.evaluate(
                args.job, data=args.data, models=models, max_rows=args.max_rows, sampling=sampling
            )
        finally:
            await studio.shutdown()

    with engine_output_to(settings.paths.engine_log):
        result = asyncio.run(evaluate())
    if args.json:
        show(result.to_json())
        return 0
    what = "held-out rows of" if result.held_out else "rows of"
    show(f"{len(result.rows)} {what} {result.source}, {result.seconds:.1f} s")
    width = max(len(name) for name in result.models)
    show("  ".join(["score".ljust(10), *(name.rjust(width) for name in result.models)]))
    for metric in (*METRICS, *LIKELIHOOD):
        cells = [f"{result.summary[m].get(metric, float('nan')):.3f}" for m in result.models]
        show("  ".join([metric.ljust(10), *(cell.rjust(width) for cell in cells)]))
    show("loss: the reference's mean negative log-likelihood per token; lower is better")
    failed = sum(len(row.errors) for row in result.rows)
    if failed:
        show(f"{failed} answers failed; see --json for which and why")
    unscored = sum(len(row.loss_errors) for row in result.rows)
    if unscored:
        show(f"{unscored} references could not be scored; see --json for which and why")
    return 0
