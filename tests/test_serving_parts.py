"""The parts under the API server: stop texts split across deltas, the API key file, and
server.json as other programs read it (a file left by a killed server is not believed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sage_tui.core.api_key import ApiKeyError, api_key, read_key, same_key, save_key
from sage_tui.core.engines.base import Sampling
from sage_tui.core.engines.stop_text import StopText
from sage_tui.core.server_file import ServerInfo, remove_server, running_server, write_server
from sage_tui.errors import SageError
from sage_tui.paths import Paths


def shown(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    filter_ = StopText(stops)
    text = "".join(filter_.feed(piece) for piece in pieces)
    return text + filter_.flush(), filter_.stopped


@pytest.mark.parametrize(
    ("stops", "pieces", "text", "stopped"),
    [
        (["END"], ["one two ", "E", "N", "D three"], "one two ", True),
        (["END"], ["one E", "NX two"], "one ENX two", False),  # held back, then let go
        (["\n\n", "###"], ["a\n", "\nb"], "a", True),
        (["ab", "b"], ["xab"], "x", True),  # the earliest stop wins
        ([], ["as", " is"], "as is", False),
        (["zz"], ["z"], "z", False),  # a reply ending inside a stop's start shows it
    ],
)
def test_stop_texts(stops, pieces, text: str, stopped: bool) -> None:
    assert shown(stops, pieces) == (text, stopped)


def test_nothing_of_a_stop_text_is_ever_shown_on_the_way() -> None:
    filter_ = StopText(["<|im_end|>"])
    assert filter_.feed("Paris<|im") == "Paris"
    assert filter_.feed("_en") == ""
    assert filter_.feed("d|> more") == "" and filter_.stopped
    assert filter_.feed("ignored") == "" and filter_.flush() == ""


def test_stop_texts_are_checked() -> None:
    with pytest.raises(SageError, match="at most 4"):
        Sampling(stop=("a", "b", "c", "d", "e")).check()
    with pytest.raises(SageError, match="a stop text is empty"):
        Sampling(stop=("",)).check()


def test_the_key_is_made_once_kept_private_and_compared_whole(tmp_path) -> None:
    paths = Paths(tmp_path)
    assert read_key(paths) is None
    key = api_key(paths)
    assert key.startswith("sage-") and len(key) > 40 and api_key(paths) == key
    assert paths.api_key_file.stat().st_mode & 0o777 == 0o600
    assert same_key(key, key) and not same_key(key[:-1], key) and not same_key("", key)
    assert not same_key("ключ", key)  # not ASCII: refused, not an error
    assert save_key(paths, "my-own-long-secret-key") == read_key(paths)


@pytest.mark.parametrize(
    ("key", "words"),
    [("short", "at least 16"), ("a key with spaces in it", "without spaces")],
)
def test_an_unusable_key_is_refused(tmp_path, key: str, words: str) -> None:
    with pytest.raises(ApiKeyError, match=words):
        save_key(Paths(tmp_path), key)


def test_a_damaged_key_file_says_what_to_do(tmp_path) -> None:
    paths = Paths(tmp_path)
    paths.api_key_file.write_text("x\n")
    with pytest.raises(ApiKeyError, match="--api-key KEY"):
        read_key(paths)


def info(pid: int, started_at: float) -> ServerInfo:
    return ServerInfo("127.0.0.1", 8765, pid, started_at, "smol", "/home/key")


def test_server_file_of_a_live_server(tmp_path) -> None:
    paths = Paths(tmp_path)
    assert running_server(paths) is None
    write_server(paths, info(os.getpid(), 0.0))
    found = running_server(paths)
    assert found is not None and found.url == "http://127.0.0.1:8765/v1"
    assert json.loads(paths.server_file.read_text())["url"] == found.url
    remove_server(paths, pid=os.getpid() + 1)  # not its file: left alone
    assert running_server(paths) is not None
    remove_server(paths, pid=os.getpid())
    assert not paths.server_file.exists()


def test_a_killed_servers_file_is_not_believed(tmp_path) -> None:
    paths = Paths(tmp_path)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    write_server(paths, info(int(gone.stdout), 0.0))
    assert running_server(paths) is None  # the process is gone
    write_server(paths, info(1, 10.0))  # pid 1 started long after: a reused pid
    assert running_server(paths) is None
    paths.server_file.write_text("{not json")
    assert running_server(paths) is None
