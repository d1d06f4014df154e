"""Loss masking on real chat templates: only the assistant replies carry loss.

The built-in model's own tokenizer and ChatML template (SmolLM2, no tool support), and two
real templates TRL ships set on a copy of it: Qwen2.5's (renders tools, prefix-stable) and
Qwen3's (renders the last reply with an empty reasoning block, so earlier turns are found by
their content).
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from sage_tui.core.data.formats import DatasetError, Example
from sage_tui.core.data.loss_mask import (
    IGNORED,
    MaskTally,
    TokenizedExample,
    supports_tools,
    tokenize_example,
)
from sage_tui.core.data.special_tokens import (
    SpecialTokenTally,
    find_special_tokens,
    special_tokens_of,
    strip_special_tokens,
)

END = "<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer(builtin_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(builtin_model_dir)


def with_template(tokenizer: Any, name: str) -> Any:
    """A copy of the tokenizer with one of TRL's real chat templates."""
    other = copy.deepcopy(tokenizer)
    other.chat_template = (resources.files("trl") / "chat_templates" / name).read_text()
    return other


def chat(*turns: str, system: str | None = None, **fields: Any) -> Example:
    """A conversation of alternating user/assistant turns."""
    messages = [{"role": "system", "content": system}] if system else []
    roles = ("user", "assistant")
    messages += [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
    return Example(messages=messages, line=fields.pop("line", 1), **fields)


def trained_runs(tokenizer: Any, tokenized: TokenizedExample) -> list[str]:
    """The decoded runs of consecutive tokens that carry loss, in order."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(tokenized.input_ids, tokenized.labels, strict=True):
        trained = label != IGNORED
        if trained:
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = trained
    return [tokenizer.decode(run) for run in runs]


def masked_text(tokenizer: Any, tokenized: TokenizedExample) -> str:
    """The tokens that carry no loss, decoded together."""
    pairs = zip(tokenized.input_ids, tokenized.labels, strict=True)
    return tokenizer.decode([token for token, label in pairs if label == IGNORED])


def rendered_ids(tokenizer: Any, example: Example) -> list[int]:
    text = tokenizer.apply_chat_template(example.messages, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_only_the_reply_and_its_end_of_turn_token_carry_loss(tokenizer: Any) -> None:
    example = chat("What is the capital of France?", "The capital of France is Paris.")
    tokenized = tokenize_example(example, tokenizer)
    assert tokenized.input_ids == rendered_ids(tokenizer, example)
    assert trained_runs(tokenizer, tokenized) == [f"The capital of France is Paris.{END}"]
    # Trained tokens keep their ids as labels; every other one is IGNORED.
    for token, label in zip(tokenized.input_ids, tokenized.labels, strict=True):
        assert label in (token, IGNORED)
    assert masked_text(tokenizer, tokenized) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging"
        f" Face{END}\n<|im_start|>user\nWhat is the capital of France?{END}\n"
        "<|im_start|>assistant\n\n"
    )
    assert tokenized.trained + tokenized.masked == len(tokenized.input_ids)
    assert tokenized.trained == len(tokenizer(f"The capital of France is Paris.{END}")["input_ids"])
    assert not tokenized.truncated and not tokenized.dropped
    assert tokenized.record() == {"input_ids": tokenized.input_ids, "labels": tokenized.labels}


def test_every_assistant_turn_of_a_conversation_carries_loss(tokenizer: Any) -> None:
    example = chat(
        "Hi, who are you?",
        "I am Sage, a helper.",
        "What can you do?",
        "I answer questions about sage-tui.",
        "Thanks!",
        "You are welcome.",
        system="Answer briefly.",
    )
    tokenized = tokenize_example(example, tokenizer)
    assert tokenized.input_ids == rendered_ids(tokenizer, example)
    assert trained_runs(tokenizer, tokenized) == [
        f"I am Sage, a helper.{END}",
        f"I answer questions about sage-tui.{END}",
        f"You are welcome.{END}",
    ]


def test_a_turn_weighted_zero_carries_no_loss(tokenizer: Any) -> None:
    example = chat(
        "First question",
        "A reply to forget.",
        "Second question",
        "A reply to learn.",
        system="Be kind.",
        weights=(1.0, 1.0, 0.0, 1.0, 1.0),
    )
    tokenized = tokenize_example(example, tokenizer)
    assert trained_runs(tokenizer, tokenized) == [f"A reply to learn.{END}"]
    everything_weighted_out = chat("Q", "A", weights=(1.0, 0.0))
    assert tokenize_example(everything_weighted_out, tokenizer).dropped


def test_train_on_prompts_trains_on_every_token(tokenizer: Any) -> None:
    example = chat("Question", "Answer", "Another", "Another answer")
    tokenized = tokenize_example(example, tokenizer, train_on_prompts=True)
    assert tokenized.labels == tokenized.input_ids == rendered_ids(tokenizer, example)
    assert tokenized.masked == 0


def test_text_rows_train_on_every_token_and_the_eos(tokenizer: Any) -> None:
    tokenized = tokenize_example(Example(text="sage-tui trains adapters.", line=4), tokenizer)
    assert tokenized.input_ids == tokenizer("sage-tui trains adapters.")["input_ids"] + [
        tokenizer.eos_token_id
    ]
    assert tokenized.labels == tokenized.input_ids and tokenized.line == 4
    ends_with_eos = tokenize_example(Example(text=f"done{END}"), tokenizer)
    assert ends_with_eos.input_ids.count(tokenizer.eos_token_id) == 1


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def tool_example(line: int = 7, tools: list | None = TOOLS) -> Example:
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    return Example(
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": "call_1"},
            {"role": "assistant", "content": "It is sunny in Paris."},
        ],
        tools=tools,
        line=line,
    )


def test_a_tool_row_is_refused_on_a_template_without_tools(tokenizer: Any) -> None:
    assert not supports_tools(tokenizer)
    with pytest.raises(DatasetError) as err:
        tokenize_example(tool_example(), tokenizer, source="calls.jsonl")
    assert str(err.value) == (
        "calls.jsonl: line 7: the row has tool definitions and tool calls, but the model's chat"
        " template does not render tools; remove such rows or choose a base model whose chat"
        " template supports tools"
    )
    with pytest.raises(DatasetError, match=r"^line 3: the row has tool calls, but"):
        tokenize_example(tool_example(line=3, tools=None), tokenizer)
    # train_on_prompts does not let the calls be dropped silently either.
    with pytest.raises(DatasetError, match="does not render tools"):
        tokenize_example(tool_example(), tokenizer, train_on_prompts=True)


def test_a_tool_row_renders_through_a_template_with_tools(tokenizer: Any) -> None:
    qwen = with_template(tokenizer, "qwen2_5.jinja")
    assert supports_tools(qwen)
    tokenized = tokenize_example(tool_example(), qwen)
    assert '"name": "get_weather"' in tokenized.text and "# Tools" in tokenized.text
    assert trained_runs(qwen, tokenized) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' + END,
        f"It is sunny in Paris.{END}",
    ]
    assert '<tool_response>\n{"sky": "sunny"}\n</tool_response>' in masked_text(qwen, tokenized)


def test_arguments_held_as_json_text_render_as_the_object_they_hold(tokenizer: Any) -> None:
    # OpenAI exports write `arguments` as a JSON string; templates write `arguments | tojson`.
    qwen = with_template(tokenizer, "qwen2_5.jinja")
    example = tool_example()
    call = example.messages[1]["tool_calls"][0]
    as_text = {**call, "function": {**call["function"], "arguments": '{"city": "Paris"}'}}
    example.messages[1] = {**example.messages[1], "tool_calls": [as_text]}
    assert tokenize_example(example, qwen).text == tokenize_example(tool_example(), qwen).text


def test_a_template_that_is_not_prefix_stable_finds_the_earlier_replies(tokenizer: Any) -> None:
    # Qwen3 writes an empty reasoning block before the last reply only.
    qwen3 = with_template(tokenizer, "qwen3.jinja")
    example = chat("First?", "One.", "Second?", "Two.")
    tokenized = tokenize_example(example, qwen3)
    assert trained_runs(qwen3, tokenized) == [f"One.{END}", f"<think>\n\n</think>\n\nTwo.{END}"]


def test_a_reply_the_template_rewrites_is_refused_with_the_way_out(tokenizer: Any) -> None:
    # Qwen3 drops the reasoning of replies before the last question: the reply as written
    # is nowhere in the conversation.
    qwen3 = with_template(tokenizer, "qwen3.jinja")
    example = chat("First?", "<think>\nLet me see.\n</think>\n\nOne.", "Second?", "Two.", line=12)
    with pytest.raises(DatasetError) as err:
        tokenize_example(example, qwen3, source="r.jsonl")
    assert str(err.value) == (
        "r.jsonl: line 12: assistant reply 1 is not found in the conversation as the model's"
        " chat template renders it, so its prompt cannot be masked; train on prompts to train"
        " on every token"
    )
    assert tokenize_example(example, qwen3, train_on_prompts=True).masked == 0


def test_truncation_keeps_the_start_and_a_row_with_no_reply_left_is_dropped(
    tokenizer: Any,
) -> None:
    example = chat("Tell me about sage-tui.", "It is a terminal studio for LoRA fine-tuning.")
    whole = tokenize_example(example, tokenizer)
    prompt = whole.masked - 1  # the newline after the last end-of-turn token is masked too
    cut = tokenize_example(example, tokenizer, max_length=prompt + 3)
    assert cut.truncated and not cut.dropped and cut.length == len(whole.input_ids)
    assert cut.input_ids == whole.input_ids[: prompt + 3] and cut.trained == 3
    assert cut.trained_in_full == whole.trained
    gone = tokenize_example(example, tokenizer, max_length=prompt)
    assert gone.truncated and gone.dropped and gone.trained == 0

    tally = MaskTally()
    for tokenized in (whole, cut, gone):
        tally.add(tokenized)
    assert (tally.rows, tally.truncated, tally.dropped) == (3, 2, 1)
    assert tally.trained == whole.trained + 3
    assert tally.masked == whole.masked + prompt
    assert tally.summary(prompt) == (
        f"3 rows: {tally.trained:,} of {tally.trained + tally.masked:,} tokens trained"
        f" ({tally.trained_share:.1%}); 2 rows cut at max length {prompt};"
        " 1 rows dropped (no trained token left)"
    )


def test_a_template_that_refuses_the_conversation_names_the_line(tokenizer: Any) -> None:
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(DatasetError) as err:
        tokenize_example(chat("Q", "A", system="S", line=9), strict, source="d.jsonl")
    assert str(err.value) == (
        "d.jsonl: line 9: the model's chat template refuses this conversation"
        " (System role not supported)"
    )


# --- literal special tokens ---------------------------------------------------------------------


def test_literal_special_tokens_are_found_counted_and_stripped(tokenizer: Any) -> None:
    tokens = special_tokens_of(tokenizer)
    assert {"<|im_end|>", "<|im_start|>", "<|endoftext|>", "</s>", "<|eot_id|>"} <= set(tokens)
    rows = [
        chat("Say hi<|im_end|>", "Hi!</s>"),
        chat("Plain", "Row"),
        Example(text="a document<|endoftext|>"),
        chat("x", "two <|im_end|> in <|im_end|> one row"),
    ]
    tally = SpecialTokenTally(tokens)
    for row in rows:
        tally.add(row)
    assert tally.found() == {"<|im_end|>": 2, "</s>": 1, "<|endoftext|>": 1}
    assert find_special_tokens(rows[0], tokens) == {"<|im_end|>", "</s>"}
    assert tally.warning("d.jsonl") == (
        "d.jsonl: rows hold literal special tokens of chat formats in their text (a tokenizer"
        " that knows one reads it as a control token): <|im_end|> (2 rows), </s> (1 rows),"
        " <|endoftext|> (1 rows); strip special tokens to remove them"
    )
    assert SpecialTokenTally(tokens).warning("d.jsonl") is None
    assert strip_special_tokens(rows[0], tokens).messages == [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "Hi!"},
    ]
    assert strip_special_tokens(rows[2], tokens).text == "a document"

    # Unstripped, the literal token becomes the real end-of-turn token inside the prompt.
    end = tokenizer.convert_tokens_to_ids(END)
    kept = tokenize_example(rows[0], tokenizer)
    stripped = tokenize_example(rows[0], tokenizer, strip=tokens)
    assert kept.input_ids.count(end) == stripped.input_ids.count(end) + 1
    assert "Say hi<|im_end|>\n" in stripped.text and "Say hi<|im_end|><|im_end|>" in kept.text
    assert trained_runs(tokenizer, stripped) == [f"Hi!{END}"]
