"""Merge a LoRA adapter into its base model as a new, self-contained model folder, verified.

Runs in a child process of its own (`python -m sage_tui.core.models.merge ...`, started by
:func:`run_merge`): the weights are loaded there, on the CPU, so the studio's process neither
holds them nor touches a GPU that jobs and the engine share. The child writes one JSON object a
line on stdout (`progress`, then `done` or `failed`).

Verification: each prompt is answered greedily by the base with the adapter, and again by the
merged model read back from the folder written; the merge stands only if every answer is the
same. The folder is written as `<out>.partial` and renamed when verified, with a manifest, so a
merge cut short leaves nothing that looks finished.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_tui.core.models.folder import write_manifest
from sage_tui.errors import ModelError, one_line

VERIFY_PROMPTS = (
    "Who are you?",
    "What is the capital of France?",
    "Write one sentence about the sea.",
)
VERIFY_TOKENS = 24


@dataclass(frozen=True)
class MergeResult:
    folder: Path
    prompts: int
    """Prompts answered the same by the adapter and by the merged model."""
    seconds: float


def partial_folder(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def run_merge(
    base: Path,
    adapter: Path,
    out: Path,
    *,
    prompts: Sequence[str] = VERIFY_PROMPTS,
    trust_remote_code: bool = False,
    progress: Callable[[str], None] = lambda _: None,
    env: dict[str, str] | None = None,
) -> MergeResult:
    """Merge in a child process and wait for it (blocking); ModelError saying why it failed."""
    if out.exists():
        raise ModelError(f"{out} exists already: choose another name for the merged model")
    command = [
        sys.executable,
        "-m",
        "sage_tui.core.models.merge",
        str(base),
        str(adapter),
        str(out),
    ]
    command += [arg for prompt in prompts for arg in ("--prompt", prompt)]
    if trust_remote_code:
        command.append("--trust-remote-code")
    child_env = {**(env if env is not None else os.environ), "CUDA_VISIBLE_DEVICES": ""}
    started = time.monotonic()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        last: dict[str, Any] = {}
        for line in child.stdout:
            try:
                last = json.loads(line)
            except ValueError:
                continue
            if last.get("kind") == "progress":
                progress(str(last.get("line", "")))
        stderr = child.stderr.read()
        code = child.wait()
    if last.get("kind") == "done":
        return MergeResult(out, int(last["prompts"]), time.monotonic() - started)
    shutil.rmtree(partial_folder(out), ignore_errors=True)
    if last.get("kind") == "failed":
        raise ModelError(str(last.get("error")))
    tail = one_line(stderr.strip().splitlines()[-1]) if stderr.strip() else "no output"
    raise ModelError(f"the merge process ended with exit code {code}: {tail}")


# -- the child ------------------------------------------------------------------------------


def _say(kind: str, **data: Any) -> None:
    print(json.dumps({"kind": kind, **data}, ensure_ascii=False), flush=True)


def _answers(model: Any, tokenizer: Any, prompts: Sequence[str]) -> list[str]:
    import torch

    answers = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            output = model.generate(
                **ids,
                max_new_tokens=VERIFY_TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
        answers.append(tokenizer.decode(output[0, ids["input_ids"].shape[1] :]))
    return answers


def merge(base: Path, adapter: Path, out: Path, prompts: Sequence[str], remote: bool) -> int:
    """The child's work; returns its exit code."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = partial_folder(out)
    shutil.rmtree(partial, ignore_errors=True)
    _say("progress", line=f"loading {base.name} and the adapter {adapter.name}")
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=remote)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto", trust_remote_code=remote)
    model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    _say("progress", line=f"answering {len(prompts)} prompts with the adapter")
    expected = _answers(model, tokenizer, prompts)
    _say("progress", line="merging the adapter into the weights")
    merged = model.merge_and_unload()
    merged.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    del model, merged
    _say("progress", line="answering the prompts with the merged model, read back from disk")
    again = AutoModelForCausalLM.from_pretrained(partial, dtype="auto", trust_remote_code=remote)
    again.eval()
    got = _answers(again, AutoTokenizer.from_pretrained(partial), prompts)
    for prompt, want, have in zip(prompts, expected, got, strict=True):
        if want != have:
            shutil.rmtree(partial, ignore_errors=True)
            _say(
                "failed",
                error=f"the merged model answers {prompt!r} otherwise than the adapter"
                f" ({have[:80]!r} instead of {want[:80]!r}); nothing was registered",
            )
            return 1
    write_manifest(partial, {"source": "merged", "base": str(base), "adapter": str(adapter)})
    partial.rename(out)
    _say("done", prompts=len(prompts))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sage_tui.core.models.merge")
    parser.add_argument("base", type=Path)
    parser.add_argument("adapter", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--prompt", action="append", default=[])
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    os.umask(0o077)
    try:
        return merge(
            args.base, args.adapter, args.out, args.prompt or VERIFY_PROMPTS, args.trust_remote_code
        )
    except Exception as err:  # any failure is reported as one line; the partial folder goes
        shutil.rmtree(partial_folder(args.out), ignore_errors=True)
        _say("failed", error=f"merge failed: {one_line(err)}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
