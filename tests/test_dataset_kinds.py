"""Rows that are not supervised chat data are refused by what they are, whatever format their
other keys suggest: preference pairs, KTO labels, rankings and scores, multimodal rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from sage_tui.core.data import DatasetError, Format, detect_format, load_dataset_file, to_example
from sage_tui.core.data.kinds import refused_kind

SFT = "sage-tui trains supervised fine-tuning only"
PAIR = (
    f"these rows are preference pairs (chosen / rejected); {SFT}, which needs one reply per row"
    " to learn: keep the chosen reply, for instance with jq -c"
)
KTO = (
    "these rows are KTO-style labelled examples ('label' marks each reply as good or bad);"
    f" {SFT}, which needs replies that are all to be learnt: keep the rows marked true,"
    " without the mark, for instance with jq -c"
)
RANKED = "these rows are ranked answers, data for reward modelling or ranking"
MEDIA = f"{SFT}, which needs text-only rows (it trains text-only models): leave out the rows"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


# (case, row, the message after "FILE: line 1: ", with data.jsonl the file's name)
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (
        "alpaca row holding a pair",
        {"instruction": "q", "output": "bad", "chosen": "good", "rejected": "bad"},
        f"{PAIR} '.output = .chosen | del(.chosen, .rejected)' data.jsonl > data-sft.jsonl,"
        " or load it with the column mapping output=chosen",
    ),
    (
        "prompt with a pair",
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
        f"{PAIR} '.completion = .chosen | del(.chosen, .rejected)' data.jsonl >"
        " data-sft.jsonl, or load it with the column mapping completion=chosen",
    ),
    (
        "TRL implicit prompt",
        {"chosen": [user("q"), bot("a")], "rejected": [user("q"), bot("b")]},
        f"{PAIR} '.messages = .chosen | del(.chosen, .rejected)' data.jsonl > data-sft.jsonl,"
        " or load it with the column mapping messages=chosen",
    ),
    (
        "TRL explicit prompt",
        {"prompt": [user("q")], "chosen": [bot("a")], "rejected": [bot("b")]},
        f"{PAIR} '.messages = (.prompt + .chosen) | del(.prompt, .chosen, .rejected)'"
        " data.jsonl > data-sft.jsonl",
    ),
    (
        "ShareGPT pair (LLaMA-Factory)",
        {
            "conversations": [{"from": "human", "value": "q"}],
            "chosen": {"from": "gpt", "value": "a"},
            "rejected": {"from": "gpt", "value": "b"},
        },
        f"{PAIR} '.conversations += [.chosen] | del(.chosen, .rejected)' data.jsonl >"
        " data-sft.jsonl",
    ),
    (
        "messages with a pair beside",
        {"messages": [user("q")], "chosen": bot("a"), "rejected": bot("b")},
        f"{PAIR} '.messages += [.chosen] | del(.chosen, .rejected)' data.jsonl > data-sft.jsonl",
    ),
    (
        "KTO prompt-completion",
        {"prompt": "q", "completion": "a", "label": True},
        f"{KTO} 'select(.label == true) | del(.label)' data.jsonl > data-sft.jsonl",
    ),
    (
        "KTO messages",
        {"messages": [user("q"), bot("a")], "label": False},
        f"{KTO} 'select(.label == true) | del(.label)' data.jsonl > data-sft.jsonl",
    ),
    (
        "LLaMA-Factory kto_tag",
        {"conversations": [{"from": "human", "value": "q"}], "kto_tag": True},
        KTO.replace("'label'", "'kto_tag'")
        + " 'select(.kto_tag == true) | del(.kto_tag)' data.jsonl > data-sft.jsonl",
    ),
    (
        "ranked outputs",
        {"instruction": "q", "output": ["best", "worse"]},
        f"{RANKED} ('output' holds a list of 2, not one reply); {SFT}, which needs one reply"
        " per row: keep the best answer as 'output' (if it comes first), for instance with"
        " jq -c '.output |= .[0]' data.jsonl > data-sft.jsonl",
    ),
    (
        "a score as the completion",
        {"prompt": "q", "completion": 0.75},
        "these rows are scored replies, data for reward modelling ('completion' holds a"
        f" number, not a reply); {SFT}, which needs one reply per row: put the reply's text"
        " in 'completion'",
    ),
    (
        "a list of answers",
        {"prompt": "q", "responses": ["a", "b", "c"], "scores": [3, 2, 1]},
        f"{RANKED} ('responses' holds 3 answers and no single reply); {SFT}, which needs one"
        " reply per row: keep the best answer as 'output' (if it comes first), for instance"
        " with jq -c '.output = .responses[0] | del(.responses)' data.jsonl > data-sft.jsonl",
    ),
    (
        "images beside messages",
        {"messages": [user("<image>What is it?"), bot("A cat.")], "images": ["cat.png"]},
        f"these rows are multimodal ('images' holds 1 item); {MEDIA} that hold images, for"
        " instance with jq -c 'select((.images // []) | length == 0) | del(.images)'"
        " data.jsonl > data-sft.jsonl",
    ),
    (
        "an audio mark in the text",
        {"instruction": "Transcribe <audio>", "output": "Hello."},
        f"these rows are multimodal (the text holds the <audio> mark of audio input); {MEDIA}"
        " whose text holds <audio>, for instance with jq -c"
        """ 'select(tojson | contains("<audio>") | not)' data.jsonl > data-sft.jsonl""",
    ),
    (
        "an image part",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is it?"},
                        {"type": "image_url", "image_url": {"url": "cat.png"}},
                    ],
                },
                bot("A cat."),
            ]
        },
        f"these rows are multimodal (a content part of type 'image_url'); {MEDIA} with"
        " content parts other than text",
    ),
]


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(("case", "row", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_kind_in_the_first_rows_refuses_the_file(
    tmp_path: Path, case: str, row: dict[str, Any], message: str
) -> None:
    path = jsonl(tmp_path / "data.jsonl", [row])
    with pytest.raises(DatasetError) as caught:
        load_dataset_file(path)
    assert str(caught.value) == f"{path}: line 1: {message}"
    assert "\n" not in str(caught.value)


def test_a_named_format_is_refused_too(tmp_path: Path) -> None:
    row = {"instruction": "q", "output": "bad", "chosen": "good", "rejected": "bad"}
    path = jsonl(tmp_path / "data.jsonl", [{"instruction": "q", "output": "a"}, row])
    with pytest.raises(DatasetError, match=r"data\.jsonl: line 2: these rows are preference"):
        load_dataset_file(path, fmt=Format.ALPACA)
    with pytest.raises(DatasetError, match=r"^dataset: row 2: these rows are preference pairs"):
        detect_format([{"instruction": "q", "output": "a"}, row])


def test_the_jq_line_fits_the_file(tmp_path: Path) -> None:
    row = {"prompt": "q", "completion": "a", "label": True}
    array = tmp_path / "kto.json"
    array.write_text(json.dumps([row], indent=2), encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        load_dataset_file(array)
    assert f"{array}: line 2: these rows are KTO" in str(caught.value)
    assert "jq -c '.[] | select(.label == true) | del(.label)' kto.json > kto-sft.jsonl" in str(
        caught.value
    )
    table = tmp_path / "kto.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["prompt", "completion", "chosen", "rejected"])
        writer.writeheader()
        writer.writerow({"prompt": "q", "completion": "", "chosen": "a", "rejected": "b"})
    with pytest.raises(DatasetError) as caught:
        load_dataset_file(table)
    message = str(caught.value)  # jq cannot read CSV: no jq line, the mapping still helps
    assert message.endswith(
        "keep the chosen reply, or load it with the column mapping completion=chosen"
    )


def test_a_later_row_of_such_a_kind_is_an_invalid_row(tmp_path: Path) -> None:
    good = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(25)]
    pair = {"instruction": "q", "output": "bad", "chosen": "good", "rejected": "bad"}
    path = jsonl(tmp_path / "data.jsonl", [*good, pair])
    with pytest.raises(DatasetError) as caught:
        load_dataset_file(path)
    assert str(caught.value) == (
        f"{path}: 1 of 26 rows are invalid (line 26: a preference pair (chosen / rejected),"
        f" not supervised chat data ({SFT})); fix them, or skip invalid rows (--skip-invalid)"
    )
    loaded = load_dataset_file(path, skip_invalid=True)
    assert loaded.usable == 25 and loaded.skipped == 1


def test_one_row_is_refused_by_to_example() -> None:
    with pytest.raises(DatasetError, match=r"^a multimodal row \('videos' holds 2 items\), not"):
        to_example({"instruction": "q", "output": "a", "videos": ["a.mp4", "b.mp4"]}, "alpaca")


def test_mapping_the_chosen_reply_trains_on_it(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "dpo.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"}])
    loaded = load_dataset_file(path, columns={"completion": "chosen"})
    assert loaded.examples[0].messages == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "good"},
    ]


@pytest.mark.parametrize(
    "row",
    [
        {"instruction": "q", "output": "a", "label": "positive"},  # a class name, not KTO
        {"text": "t", "label": True},  # a classified text, not a conversation
        {"messages": [user("q"), bot("a")], "images": []},
        {"messages": [user("q"), bot("a")], "image": None},
        {"prompt": [user("q")], "completion": [bot("a")]},  # TRL conversational
        {"instruction": "Write an <img> tag", "output": "<img src='a.png'>"},
        {"instruction": "q", "output": "a", "answers": ["a"]},
    ],
)
def test_supervised_rows_are_not_mistaken(row: dict[str, Any]) -> None:
    assert refused_kind(row) is None


def test_the_jq_line_quotes_a_file_name_for_the_shell(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "my pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(DatasetError) as caught:
        load_dataset_file(path)
    assert "del(.chosen, .rejected)' 'my pairs.jsonl' > 'my pairs-sft.jsonl'," in str(caught.value)
