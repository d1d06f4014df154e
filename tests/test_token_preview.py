"""The token preview with loss masking, on the built-in model's real tokenizer: trained and
masked token counts, over-length and dropped rows, literal special tokens, and the first row's
tokens as highlighted pieces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sage_tui.core.data import DatasetError, Example, Format, load_dataset_file
from sage_tui.core.data.loading import LoadedDataset
from sage_tui.core.data.loss_mask import tokenize_example
from sage_tui.core.data.preview import preview

ALPACA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "alpaca_en_demo.json"
END = "<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer(builtin_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(builtin_model_dir)


def chat(question: str, answer: str, line: int = 1) -> Example:
    return Example(
        messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        line=line,
    )


def test_counts_and_the_first_rows_pieces(tokenizer: Any) -> None:
    rows = [chat("Who made sage-tui?", "The SAGE team."), chat("Why?", "To fine-tune with LoRA.")]
    shown = preview(rows, tokenizer, max_length=256)
    each = [tokenize_example(row, tokenizer) for row in rows]
    assert shown.trained_tokens == sum(t.trained for t in each)
    assert shown.masked_tokens == sum(t.masked for t in each)
    assert shown.lengths == [len(t.input_ids) for t in each]
    assert 0 < shown.trained_share < 0.5
    assert (shown.truncated, shown.dropped, shown.special_tokens) == (0, 0, {})

    trained = [text for text, carries_loss in shown.pieces if carries_loss]
    assert trained == [f"The SAGE team.{END}"]
    assert "".join(text for text, _ in shown.pieces) == shown.samples[0]
    # Runs are merged: the flags alternate.
    flags = [carries_loss for _, carries_loss in shown.pieces]
    assert flags == [False, True, False]


def test_train_on_prompts_counts_every_token_as_trained(tokenizer: Any) -> None:
    rows = [chat("Question", "Answer")]
    shown = preview(rows, tokenizer, max_length=256, train_on_prompts=True)
    assert shown.masked_tokens == 0 and shown.trained_tokens == shown.lengths[0]
    assert shown.pieces == [(shown.samples[0], True)] and shown.train_on_prompts


def test_over_length_dropped_and_special_token_rows(tokenizer: Any) -> None:
    long_prompt = chat("word " * 80, "short answer")
    rows = [long_prompt, chat("hi<|im_end|>", "hello</s>"), chat("a", "b")]
    shown = preview(rows, tokenizer, max_length=40)
    assert shown.truncated == 1 and shown.dropped == 1 and shown.count == 3
    assert shown.special_tokens == {"<|im_end|>": 1, "</s>": 1}
    # The dropped row's tokens are not counted: training never sees them.
    kept = [tokenize_example(row, tokenizer, max_length=40) for row in rows[1:]]
    assert shown.trained_tokens == sum(t.trained for t in kept)
    assert all(not carries_loss for _, carries_loss in shown.pieces)  # the first row's

    stripped = preview(rows, tokenizer, max_length=40, strip_special_tokens=True)
    assert stripped.special_tokens == shown.special_tokens  # what the file holds
    assert "hi<|im_end|>\n" in stripped.samples[1] and "hello</s>" not in stripped.samples[1]


def test_a_refused_row_names_the_file_and_line(tokenizer: Any) -> None:
    call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    row = Example(
        messages=[
            {"role": "user", "content": "call f"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ],
        line=5,
    )
    dataset = LoadedDataset(path=Path("calls.jsonl"), format=Format.MESSAGES, examples=[row])
    with pytest.raises(DatasetError, match=r"^calls.jsonl: line 5: the row has tool calls"):
        preview(dataset, tokenizer, max_length=128)


def test_the_shared_alpaca_file_masked(tokenizer: Any) -> None:
    if not ALPACA.exists():
        pytest.skip(f"{ALPACA} is not on this machine")
    loaded = load_dataset_file(ALPACA)
    shown = preview(loaded, tokenizer, max_length=1024)
    assert shown.count == 999 and shown.dropped == 0
    # Alpaca replies are long next to their prompts: most tokens carry loss, not all.
    assert 0.6 < shown.trained_share < 0.9, shown.trained_share
    everything = preview(loaded, tokenizer, max_length=1024, train_on_prompts=True)
    assert everything.trained_tokens == shown.trained_tokens + shown.masked_tokens
