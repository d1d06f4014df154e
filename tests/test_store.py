"""The SQLite store: schema, migrations and refusing files that are not ours."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sage_tui.core.store import MIGRATIONS, ModelRecord, Store
from sage_tui.errors import StoreError

V2 = "ALTER TABLE models ADD COLUMN note TEXT NOT NULL DEFAULT '';"


def test_new_database_is_at_latest_version_with_wal(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    assert store.schema_version == len(MIGRATIONS)
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"models", "jobs", "conversations", "messages", "settings"} <= tables


def test_migration_keeps_existing_rows(tmp_path: Path) -> None:
    path = tmp_path / "db"
    old = Store(path)
    old.upsert_model(ModelRecord("m", "base", "local", "/models/m", config={"a": 1}))
    old.close()

    new = Store(path, migrations=(*MIGRATIONS, V2))
    assert new.schema_version == len(MIGRATIONS) + 1
    assert new.get_model("m").config == {"a": 1}
    note = new._db.execute("SELECT note FROM models WHERE name = 'm'").fetchone()[0]
    assert note == ""


def test_failed_migration_leaves_previous_version_and_data(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Store(path).upsert_model(ModelRecord("m", "base", "local", "/models/m"))
    broken = f"{V2}\nCREATE TABLE models (x);"  # second statement fails after the first ran
    latest = len(MIGRATIONS)
    with pytest.raises(
        StoreError, match=rf"schema version {latest + 1} failed .* stays at version {latest}"
    ):
        Store(path, migrations=(*MIGRATIONS, broken))
    again = Store(path)
    assert again.schema_version == latest
    columns = [r[1] for r in again._db.execute("PRAGMA table_info(models)")]
    assert "note" not in columns  # the first statement was rolled back too
    assert again.get_model("m") is not None


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Store(path, migrations=(*MIGRATIONS, V2)).close()
    with pytest.raises(StoreError, match="newer than this sage-tui knows"):
        Store(path)


def test_corrupt_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "sage-tui.db"
    garbage = b"this is not sqlite\x00" * 300
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as info:
        Store(path)
    message = str(info.value)
    assert str(path) in message and "not a readable sage-tui database" in message
    assert "\n" not in message
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sage-tui.db"]


def test_models_and_settings_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.upsert_model(ModelRecord("base-b", "base", "local", "/b"))
    store.upsert_model(ModelRecord("a-adapter", "adapter", "finetune", "/x", base_model="base-b"))
    store.upsert_model(ModelRecord("base-a", "base", "hf", "/a", config={"hf_id": "org/a"}))
    assert [m.name for m in store.list_models()] == ["base-a", "base-b", "a-adapter"]
    assert store.get_model("a-adapter").base_model == "base-b"
    assert store.remove_model("base-a") and not store.remove_model("base-a")
    store.set_setting("k", "v")
    assert store.get_setting("k") == "v"
    store.set_setting("k", None)
    assert store.get_setting("k") is None


def test_second_connection_sees_writes(tmp_path: Path) -> None:
    """The CLI and the TUI share one file: a write by one is visible to the other."""
    first, second = Store(tmp_path / "db"), Store(tmp_path / "db")
    first.upsert_model(ModelRecord("m", "base", "local", "/m"))
    assert second.get_model("m") is not None


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as db:
        db.execute("INSERT INTO settings (key, value) VALUES ('a', '1')")
        db.execute("INSERT INTO settings (key, value) VALUES ('a', '2')")
    assert store.get_setting("a") is None


def test_jobs_from_version_1_gain_an_empty_placement(tmp_path: Path) -> None:
    path = tmp_path / "db"
    old = Store(path, migrations=MIGRATIONS[:1])
    with old.transaction() as db:
        db.execute(
            "INSERT INTO jobs (id, base_model, dataset, status, spec, output_dir, created_at)"
            " VALUES ('j', 'm', 'd.jsonl', 'completed', '{}', 'out', 1.0)"
        )
    old.close()
    row = Store(path)._db.execute("SELECT status, gpus FROM jobs WHERE id = 'j'").fetchone()
    assert tuple(row) == ("completed", None)
