"""core.safe_text: terminal controls made visible, per character and per streamed piece."""

from __future__ import annotations

import io
import os
import pty

import pytest
from rich.cells import cell_len

from sage_tui.core.safe_text import (
    VisibleStream,
    for_stream,
    is_clean,
    visible,
    visible_bytes,
    without_controls,
)

UNDECODABLE = b"\xff\xfe".decode("utf-8", errors="surrogateescape")

CASES = [
    # (text, what the user sees)
    ("plain words, 中文, émoji 🙂", "plain words, 中文, émoji 🙂"),
    ("[/INST] [bold]x [/]", "[/INST] [bold]x [/]"),  # markup is not a control: left alone
    ("a\nb\tc", "a\nb\tc"),
    ("\x1b]52;c;aGVsbG8=\x1b\\", "␛]52;c;aGVsbG8=␛\\"),
    ("\x1b]8;;http://evil\x1b\\x\x1b]8;;\x1b\\", "␛]8;;http://evil␛\\x␛]8;;␛\\"),
    ("\x1b[2J", "␛[2J"),
    ("\x9b31m", "\\x9b31m"),
    ("\x85", "\\x85"),
    ("abc\u202eexe.txt", "abc\\u202eexe.txt"),
    ("\u2066x\u2069", "\\u2066x\\u2069"),
    (UNDECODABLE, "\\xff\\xfe"),
    ("\ud800", "\\ud800"),
    ("\x00", "␀"),
    ("\x07", "␇"),
    ("\x7f", "␡"),
    ("over\rwrite", "over␍write"),
    ("windows\r\nline", "windows\nline"),
]


@pytest.mark.parametrize(("text", "shown"), CASES)
def test_visible_shows_every_control(text: str, shown: str) -> None:
    assert visible(text) == shown
    assert is_clean(shown)
    assert is_clean(text) == (text == shown)


@pytest.mark.parametrize(("text", "shown"), CASES)
def test_without_controls_keeps_every_cell_in_place(text: str, shown: str) -> None:
    removed = without_controls(text)
    assert is_clean(removed)
    assert cell_len(removed) == cell_len(text)
    if text == shown:
        assert removed is text  # nothing to do: the same object, no copy per rendered segment


def test_undecodable_bytes_are_shown_as_the_bytes_they_were() -> None:
    assert visible_bytes(b"step 1 \xff\xfe\x1b[2J done\n") == "step 1 \\xff\\xfe␛[2J done\n"
    assert visible_bytes("größe".encode()) == "größe"


@pytest.mark.parametrize(("text", "shown"), CASES)
def test_a_stream_shows_the_same_wherever_it_is_cut(text: str, shown: str) -> None:
    for cut in range(len(text) + 1):
        stream = VisibleStream()
        assert stream.feed(text[:cut]) + stream.feed(text[cut:]) + stream.end() == shown


def test_a_line_end_split_between_pieces_stays_a_line_end() -> None:
    stream = VisibleStream()
    assert [stream.feed("one\r"), stream.feed("\ntwo\r"), stream.end()] == ["one", "\ntwo", "␍"]


def test_only_a_terminal_gets_visible_text() -> None:
    leader, follower = pty.openpty()
    try:
        with open(follower, "w", closefd=False) as terminal:
            assert for_stream(terminal)
    finally:
        os.close(leader)
        os.close(follower)
    read, write = os.pipe()
    with open(read, "rb"), open(write, "w") as piped:
        assert not for_stream(piped)
    closed = io.StringIO()
    closed.close()
    assert not for_stream(closed)
    assert not for_stream(io.StringIO())
