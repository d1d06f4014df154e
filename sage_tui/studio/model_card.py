"""The README card of an exported model: what it is, how it was made, how it scored, how to
load it. Markdown, as on a Hugging Face model page."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sage_tui.core.gpu import format_bytes
from sage_tui.core.models.details import format_parameters
from sage_tui.core.store import ModelRecord

if TYPE_CHECKING:
    from sage_tui.studio.evaluation import Evaluation
    from sage_tui.studio.models import ModelDetails


def _training_lines(details: ModelDetails) -> list[str]:
    job = details.job
    if job is None:
        return []
    spec, progress = job.spec, job.progress
    rows = [
        ("job", job.id),
        ("dataset", spec.dataset),
        ("steps", progress.step),
        ("LoRA rank / alpha / dropout", f"{spec.lora_r} / {spec.lora_alpha} / {spec.lora_dropout}"),
        ("target modules", spec.target_modules),
        ("learning rate", spec.learning_rate),
        ("epochs / max steps", f"{spec.epochs} / {spec.max_steps}"),
        ("batch size x grad accum", f"{spec.batch_size} x {spec.grad_accum}"),
        ("max length", spec.max_length),
        ("loss on", "every token" if spec.train_on_prompts else "the assistant replies"),
        ("final train loss", progress.last_loss),
        ("final eval loss", progress.eval_loss),
    ]
    lines = ["## Training", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows if value is not None]
    return [*lines, ""]


def _evaluation_lines(evaluation: Evaluation | None) -> list[str]:
    if evaluation is None or not evaluation.summary:
        return []
    metrics = next((list(s) for s in evaluation.summary.values() if s), [])
    what = "held-out rows" if evaluation.held_out else "rows"
    lines = [
        "## Evaluation",
        "",
        f"{len(evaluation.rows)} {what} of `{evaluation.source}`, each model's mean:",
        "",
        "| model | " + " | ".join(metrics) + " |",
        "| --- |" + " --- |" * len(metrics),
    ]
    for model in evaluation.models:
        scores = evaluation.summary.get(model, {})
        cells = [f"{scores[m]:.3f}" if m in scores else "-" for m in metrics]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def model_card(
    details: ModelDetails, base: ModelRecord | None, evaluation: Evaluation | None
) -> str:
    """The card of `details`' model (`base`: an adapter's base model)."""
    record, facts = details.record, details.facts
    kind = "LoRA adapter" if record.kind == "adapter" else "model"
    if record.source == "merged":
        kind = f"model: the adapter {record.config.get('merged_from')} merged into its base"
    lines = [
        f"# {record.name}",
        "",
        f"A {kind}, exported by sage-tui on {time.strftime('%Y-%m-%d')}.",
        "",
        "| | |",
        "| --- | --- |",
    ]
    facts_rows = [
        ("base model", base.name if base else record.config.get("base")),
        ("base model folder", base.path if base else None),
        ("parameters", format_parameters(facts.parameters) if facts.parameters else None),
        ("dtype", facts.dtype),
        ("context length", facts.context_length),
        ("rank / alpha", f"{facts.rank} / {facts.alpha}" if facts.rank else None),
        ("target modules", ", ".join(facts.target_modules) or None),
    ]
    lines += [f"| {name} | {value} |" for name, value in facts_rows if value]
    lines.append("")
    lines += _training_lines(details)
    lines += _evaluation_lines(evaluation)
    if details.standing is not None:
        s = details.standing
        lines += [
            "## Blind A/B votes",
            "",
            f"{s.games} games: {s.wins} won, {s.losses} lost, {s.ties} tied;"
            f" win rate {s.win_rate:.0%} ({s.low:.0%}-{s.high:.0%}), rating {s.rating:.0f}.",
            "",
        ]
    lines += ["## Use", ""]
    if record.kind == "adapter":
        lines += [
            "```sh",
            f"vllm serve BASE_MODEL_FOLDER --enable-lora --lora-modules {record.name}=THIS_FOLDER",
            "```",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM",
            "model = PeftModel.from_pretrained(",
            '    AutoModelForCausalLM.from_pretrained("BASE_MODEL_FOLDER"), "THIS_FOLDER"',
            ")",
            "```",
        ]
    else:
        lines += [
            "```sh",
            "vllm serve THIS_FOLDER",
            "```",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER")',
            'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")',
            "```",
        ]
    return "\n".join(lines) + "\n"


def detail_lines(details: ModelDetails) -> list[tuple[str, str]]:
    """The details of a model as (label, value) lines: the details pane and `models show`."""
    record, facts, job = details.record, details.facts, details.job
    lines = [
        ("name", record.name + ("  (the chat's model)" if details.active else "")),
        ("kind", record.kind + (" (merged)" if record.source == "merged" else "")),
        ("source", record.source),
        ("path", record.path),
    ]
    if facts.problem:
        lines.append(("files", facts.problem))
    else:
        lines.append(("size on disk", format_bytes(facts.size_bytes)))
        lines.append(("parameters", format_parameters(facts.parameters)))
    if record.base_model:
        lines.append(("base model", record.base_model))
    for label, value in (
        ("dtype", facts.dtype),
        ("context length", facts.context_length),
        ("rank / alpha", f"{facts.rank} / {facts.alpha:g}" if facts.rank else None),
        ("target modules", ", ".join(facts.target_modules)),
        ("merged from", record.config.get("merged_from")),
        ("adapters", ", ".join(details.adapters)),
    ):
        if value:
            lines.append((label, str(value)))
    if job is not None:
        progress = job.progress
        lines.append(("job", f"{job.id} ({job.status}) on {job.dataset}"))
        lines.append(("steps", str(progress.step)))
        lines.append(("train loss", _loss(progress.last_loss)))
        lines.append(("eval loss", _loss(progress.eval_loss)))
    lines += [("memory", line) for line in details.memory]
    if details.performance is not None:
        lines.append(("speed", details.performance.line()))
    if details.standing is not None:
        s = details.standing
        record_line = (
            f"{s.wins}/{s.losses}/{s.ties} in {s.games} games, win rate {s.win_rate:.0%}"
            f" ({s.low:.0%}-{s.high:.0%}), rating {s.rating:.0f}"
        )
        lines.append(("A/B record", record_line))
    return lines


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
