"""Blind A/B votes: stored with their prompt and replies, refused when they cannot count, added
up into a leaderboard (W/L/T, Wilson interval, Bradley-Terry rating), shown and exported by the
CLI. Real SQLite under an isolated home; no model is loaded."""

from __future__ import annotations

import io
import json
import math
import random
import sqlite3
from pathlib import Path

import pytest

from sage_tui.cli import main
from sage_tui.core.arena import (
    Verdict,
    Vote,
    VoteError,
    VoteStore,
    bradley_terry,
    leaderboard,
    wilson_interval,
)
from sage_tui.core.store import MIGRATIONS, ModelRecord, Store
from sage_tui.errors import ModelError, SageError
from sage_tui.services import Services
from sage_tui.studio import Studio
from sage_tui.studio.arena import ArenaDesk, BlindPair

BASE = "smollm2-135m-instruct"
TUNED = "sage-finetuned-x"
OTHER = "sage-finetuned-y"
HOSTILE = "what does [/INST] mean? \x1b]52;c;cHduZWQ=\x07\x1b[2J"


@pytest.fixture
def arena(services: Services) -> ArenaDesk:
    """The studio's arena over a home with one base model, two adapters of it and a second
    base model with its own adapter (records only: nothing here loads them)."""
    store = services.store
    store.upsert_model(ModelRecord(BASE, "base", "builtin", "/models/smol"))
    store.upsert_model(ModelRecord(TUNED, "adapter", "finetune", "/a/x", base_model=BASE))
    store.upsert_model(ModelRecord(OTHER, "adapter", "finetune", "/a/y", base_model=BASE))
    store.upsert_model(ModelRecord("qwen", "base", "local", "/models/qwen"))
    store.upsert_model(ModelRecord("qwen-tuned", "adapter", "finetune", "/a/q", base_model="qwen"))
    return Studio(services).arena


def vote(a: str, b: str, verdict: str, prompt: str = "hi", base: str = BASE) -> Vote:
    return Vote(base, prompt, a, b, f"reply of {a}", f"reply of {b}", Verdict(verdict))


def votes_of(results: list[tuple[str, str, str]]) -> list[Vote]:
    return [vote(a, b, verdict) for a, b, verdict in results]


def run(capsys: pytest.CaptureFixture[str], services: Services, *argv: str) -> tuple[int, str]:
    code = main(["--home", str(services.settings.home), *argv])
    captured = capsys.readouterr()
    assert not captured.err, captured.err
    return code, captured.out


# -- storing votes ------------------------------------------------------------------------------


def test_a_vote_is_stored_with_its_prompt_and_both_replies(arena: ArenaDesk) -> None:
    pair = BlindPair(BASE, TUNED, BASE)
    saved = arena.vote(pair, "Name a colour.", "Blue.", "Red, I think.", "b")
    assert saved.id is not None and saved.created_at > 0
    (back,) = arena.votes.all()
    assert back == saved
    assert (back.base_model, back.model_a, back.model_b) == (BASE, TUNED, BASE)
    assert (back.prompt, back.reply_a, back.reply_b) == ("Name a colour.", "Blue.", "Red, I think.")
    assert back.verdict is Verdict.B


def test_votes_are_read_by_base(arena: ArenaDesk) -> None:
    arena.vote(BlindPair(BASE, TUNED, OTHER), "p", "x", "y", Verdict.A)
    arena.vote(BlindPair("qwen", "qwen", "qwen-tuned"), "p", "x", "y", Verdict.TIE)
    assert [v.model_b for v in arena.votes.all(BASE)] == [OTHER]
    assert [v.model_b for v in arena.votes.all("qwen")] == ["qwen-tuned"]
    assert len(arena.votes.all()) == 2
    assert arena.votes.all("nothing") == []


@pytest.mark.parametrize(
    ("prompt", "reply_a", "reply_b", "verdict", "message"),
    [
        ("  \n", "x", "y", "a", "the prompt is empty"),
        ("p", "", "y", "a", "a vote needs both replies: reply A is empty"),
        ("p", "x", " \t\n", "a", "a vote needs both replies: reply B is empty"),
        ("p", "x", "y", "A", "unknown verdict 'A': choose one of a, b, tie, both_bad"),
        ("p", "x", "y", "draw", "unknown verdict 'draw': choose one of a, b, tie, both_bad"),
    ],
)
def test_a_bad_vote_is_refused_and_nothing_is_stored(
    arena: ArenaDesk, prompt: str, reply_a: str, reply_b: str, verdict: str, message: str
) -> None:
    with pytest.raises(VoteError) as info:
        arena.vote(BlindPair(BASE, TUNED, BASE), prompt, reply_a, reply_b, verdict)
    assert isinstance(info.value, SageError)
    assert message in str(info.value)
    assert arena.votes.all() == []


def test_one_model_on_both_sides_is_refused(arena: ArenaDesk) -> None:
    with pytest.raises(VoteError, match="'sage-finetuned-x' is on both sides"):
        arena.vote(BlindPair(BASE, TUNED, TUNED), "p", "x", "y", "a")
    with pytest.raises(VoteError, match="is on both sides"):
        arena.blind_pair(TUNED, TUNED)
    assert arena.votes.all() == []


def test_models_on_different_bases_are_refused_naming_both_bases(arena: ArenaDesk) -> None:
    with pytest.raises(VoteError) as info:
        arena.blind_pair(TUNED, "qwen-tuned")
    message = str(info.value)
    assert f"runs on {BASE!r}" in message and "on 'qwen'" in message
    with pytest.raises(VoteError, match="runs on 'qwen'"):
        arena.blind_pair("qwen", BASE)


def test_an_unregistered_model_is_refused(arena: ArenaDesk) -> None:
    with pytest.raises(ModelError, match="no model named 'ghost' is registered"):
        arena.blind_pair(BASE, "ghost")


def test_the_blind_order_is_random_and_reveal_names_both(arena: ArenaDesk) -> None:
    rng = random.Random(7)
    pairs = [arena.blind_pair(TUNED, BASE, rng) for _ in range(20)]
    assert {(p.model_a, p.model_b) for p in pairs} == {(TUNED, BASE), (BASE, TUNED)}
    assert {p.base for p in pairs} == {BASE}
    # The same seed gives the same order: a front end's test can pin it.
    again = random.Random(7)
    assert [arena.blind_pair(TUNED, BASE, again) for _ in range(20)] == pairs
    assert BlindPair(BASE, TUNED, BASE).reveal() == f"A was {TUNED}, B was {BASE}"
    # Two adapters of one base share it.
    assert arena.blind_pair(TUNED, OTHER, rng).base == BASE


def test_user_text_round_trips_unchanged(arena: ArenaDesk) -> None:
    saved = arena.vote(BlindPair(BASE, TUNED, BASE), HOSTILE, "[INST] ok", "\x1b[31mred", "tie")
    (back,) = arena.votes.all()
    assert back == saved
    assert (back.prompt, back.reply_a, back.reply_b) == (HOSTILE, "[INST] ok", "\x1b[31mred")


def test_a_database_from_before_votes_gains_the_table_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    old = Store(path, migrations=MIGRATIONS[:3])
    old.upsert_model(ModelRecord(BASE, "base", "builtin", "/m"))
    old.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.get_model(BASE) is not None
    saved = VoteStore(store).add(vote(TUNED, BASE, "both_bad"))
    assert VoteStore(store).all(BASE) == [saved]
    # The table itself refuses a verdict the code would never write.
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as db:
        db.execute(
            "INSERT INTO votes (base_model, prompt, model_a, model_b, reply_a, reply_b,"
            " verdict, created_at) VALUES ('b', 'p', 'x', 'y', 'r', 's', 'maybe', 1.0)"
        )
    assert len(VoteStore(store).all()) == 1


# -- the leaderboard ----------------------------------------------------------------------------


def test_the_leaderboard_counts_wins_losses_and_ties() -> None:
    results = (
        [(TUNED, BASE, "a")] * 5
        + [(BASE, TUNED, "b")]
        + [(TUNED, BASE, "b")] * 3
        + [(TUNED, BASE, "tie"), (BASE, TUNED, "both_bad")]
    )
    first, second = leaderboard(votes_of(results))
    assert first.model == TUNED and second.model == BASE
    assert (first.games, first.wins, first.losses, first.ties, first.both_bad) == (11, 6, 3, 2, 1)
    assert (second.games, second.wins, second.losses, second.ties, second.both_bad) == (
        11,
        3,
        6,
        2,
        1,
    )
    assert first.win_rate == pytest.approx(7 / 11)
    assert second.win_rate == pytest.approx(4 / 11)
    # Two players: the ratings sit either side of 1000.
    assert first.rating > 1000 > second.rating
    assert first.rating + second.rating == pytest.approx(2000)


def test_the_wilson_interval_matches_a_hand_computed_one() -> None:
    # p = 0.65 over 10 games, z = 1.96:
    # (0.65 + 0.19207 -/+ 1.96 * sqrt(0.02275 + 0.0096036)) / 1.38415 = 0.3537 .. 0.8631
    low, high = wilson_interval(0.65, 10)
    assert low == pytest.approx(0.3537, abs=2e-4)
    assert high == pytest.approx(0.8631, abs=2e-4)
    results = [(TUNED, BASE, "a")] * 6 + [(TUNED, BASE, "b")] * 3 + [(TUNED, BASE, "tie")]
    tuned = next(s for s in leaderboard(votes_of(results)) if s.model == TUNED)
    assert (tuned.win_rate, tuned.low, tuned.high) == pytest.approx((0.65, low, high))
    assert wilson_interval(1.0, 3)[1] == 1.0
    assert wilson_interval(0.0, 3)[0] == pytest.approx(0.0, abs=1e-12)


def test_the_model_that_wins_most_ranks_first_and_an_undefeated_one_is_finite() -> None:
    results = (
        [(TUNED, BASE, "a")] * 8  # TUNED never loses
        + [(OTHER, BASE, "a")] * 4
        + [(OTHER, BASE, "b")] * 4
        + [(TUNED, OTHER, "a")] * 3
    )
    standings = leaderboard(votes_of(results))
    assert [s.model for s in standings] == [TUNED, OTHER, BASE]
    top = standings[0]
    assert (top.wins, top.losses) == (11, 0) and top.win_rate == 1.0
    assert math.isfinite(top.rating) and top.rating < 2000
    # The Elo scale is centred: the geometric mean strength is 1000.
    assert sum(s.rating for s in standings) / 3 == pytest.approx(1000)


def test_bradley_terry_gives_a_strength_ratio_on_the_elo_scale() -> None:
    # 30 games of 3:1 (no prior would give exactly 400 * log10(3) = 190.8 points apart);
    # the weak prior only pulls them slightly together.
    games = [("x", "y", 1.0)] * 30 + [("x", "y", 0.0)] * 10
    ratings = bradley_terry(games)
    gap = ratings["x"] - ratings["y"]
    assert 170 < gap < 400 * math.log10(3)
    assert bradley_terry([]) == {}
    # Even results are even ratings, ties count half to each side.
    even = bradley_terry([("x", "y", 0.5)] * 4 + [("x", "y", 1.0), ("y", "x", 1.0)])
    assert even["x"] == pytest.approx(even["y"])


def test_stats_by_base(arena: ArenaDesk) -> None:
    arena.vote(BlindPair(BASE, TUNED, BASE), "p", "x", "y", "a")
    arena.vote(BlindPair("qwen", "qwen", "qwen-tuned"), "p", "x", "y", "b")
    assert {s.model for s in arena.stats(BASE)} == {TUNED, BASE}
    assert [s.model for s in arena.stats("qwen")] == ["qwen-tuned", "qwen"]
    assert len(arena.stats()) == 4
    assert arena.stats("nothing") == []


# -- the CLI ------------------------------------------------------------------------------------


def cast(arena: ArenaDesk) -> None:
    for verdict in ["a", "a", "a", "b", "tie"]:
        arena.vote(BlindPair(BASE, TUNED, BASE), HOSTILE, "yes", "no", verdict)


def test_arena_stats_with_no_votes_says_how_to_vote(capsys, services: Services) -> None:
    code, out = run(capsys, services, "arena", "stats")
    assert code == 0
    assert out.startswith("no votes yet: vote with `sage-tui arena vote")
    code, out = run(capsys, services, "arena", "stats", "--base", "qwen", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_arena_stats_prints_the_leaderboard(capsys, services: Services, arena) -> None:
    cast(arena)
    code, out = run(capsys, services, "arena", "stats")
    assert code == 0
    heading, first, second = out.rstrip("\n").split("\n")
    assert heading.split()[:4] == ["model", "rating", "games", "W/L/T"]
    assert first.split()[0] == TUNED and second.split()[0] == BASE
    assert first.split()[2:4] == ["5", "3/1/1"]
    expected = next(s for s in arena.stats() if s.model == TUNED)
    assert first.endswith(f"70% ({expected.low * 100:.0f}\u2013{expected.high * 100:.0f}%)")
    assert f"{expected.rating:.0f}" == first.split()[1]


def test_arena_stats_as_json(capsys, services: Services, arena) -> None:
    cast(arena)
    arena.vote(BlindPair("qwen", "qwen", "qwen-tuned"), "p", "x", "y", "both_bad")
    code, out = run(capsys, services, "arena", "stats", "--json", "--base", BASE)
    assert code == 0
    rows = json.loads(out)
    assert [r["model"] for r in rows] == [TUNED, BASE]
    assert {k: rows[1][k] for k in ("games", "wins", "losses", "ties", "both_bad")} == {
        "games": 5,
        "wins": 1,
        "losses": 3,
        "ties": 1,
        "both_bad": 0,
    }
    assert rows[0]["win_rate"] == pytest.approx(0.7)
    assert rows[0]["low"] < 0.7 < rows[0]["high"]


def test_arena_export_round_trips_the_votes(
    capsys, services: Services, arena, tmp_path: Path
) -> None:
    cast(arena)
    arena.vote(BlindPair("qwen", "qwen", "qwen-tuned"), "p", "x", "y", "both_bad")
    target = tmp_path / "out" / "votes.jsonl"
    code, out = run(capsys, services, "arena", "export", str(target), "--base", BASE)
    assert (code, out) == (0, f"5 votes written to {target}\n")
    lines = target.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert [Vote(**{**r, "verdict": Verdict(r["verdict"])}) for r in rows] == arena.votes.all(BASE)
    assert rows[0]["prompt"] == HOSTILE and rows[0]["verdict"] == "a"
    assert "[/INST]" in lines[0]  # ensure_ascii=False: text is stored as typed
    code, out = run(capsys, services, "arena", "export", str(target))
    assert out == f"6 votes written to {target}\n"
    assert len(VoteStore(services.store).all()) == 6


class Terminal(io.StringIO):
    """stdout as a person's terminal: `show` makes controls visible."""

    def isatty(self) -> bool:
        return True


def test_names_are_printed_safely_on_a_terminal(
    services: Services, arena, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = "evil\x1b]52;c;cHduZWQ=\x07"
    services.store.upsert_model(ModelRecord(hostile, "adapter", "finetune", "/e", base_model=BASE))
    arena.vote(BlindPair(BASE, hostile, BASE), HOSTILE, "x", "y", "a")
    screen = Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    assert main(["--home", str(services.settings.home), "arena", "stats"]) == 0
    shown = screen.getvalue()
    assert "\x1b" not in shown and "\x07" not in shown
    assert "evil" in shown


def test_an_export_that_cannot_be_written_is_one_line(
    capsys, services: Services, arena, tmp_path: Path
) -> None:
    cast(arena)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["--home", str(services.settings.home), "arena", "export", f"{blocker}/v.jsonl"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"sage-tui: error: cannot write the votes to {blocker}/v.jsonl")
    assert err.count("\n") == 1
