"""Migrations run in strict sequence, and every starting point ends at the same schema.

As simonw/llm's ``tests/test_migrate.py`` does: migrate a blank database, and a database that
holds only the oldest schema, and compare what ``sqlite_master`` says.
"""

import sqlite3

import pytest

from odyssey.store import DB_FILE, Store, migrations

# The file order the migrations ran in before they were put in sequence: databases written then
# hold these names, applied in this order.
LEGACY_ORDER = [
    "m001_initial",
    "m050_deploy_keys_capture_feedback",
    "m030_align_preferences",
    "m010_select_tables",
    "m060_augment_traces",
    "m040_optimize_measurements",
]


def _connect(path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _schema(db: sqlite3.Connection) -> set[tuple]:
    # rootpage differs with the order tables were created in; the rest must not
    rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
    return {tuple(r) for r in rows}


def _applied(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM schema_migrations ORDER BY rowid")]


def _apply_only(db: sqlite3.Connection, names: list[str], monkeypatch) -> None:
    by_name = dict(migrations.MIGRATIONS)
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", [(name, by_name[name]) for name in names])
        assert migrations.apply(db) == names


def test_migrations_are_in_strict_sequence():
    numbers = [migrations.number(name) for name, _ in migrations.MIGRATIONS]
    assert numbers == sorted(set(numbers))
    names = [name for name, _ in migrations.MIGRATIONS]
    assert names[: len(LEGACY_ORDER)] == sorted(LEGACY_ORDER)  # later migrations follow the released ones


def test_out_of_sequence_or_badly_named_migration_is_refused(monkeypatch):
    monkeypatch.setattr(migrations, "MIGRATIONS", list(migrations.MIGRATIONS))
    last = migrations.MIGRATIONS[-1][0]

    def m005_late() -> str:
        return ""

    def late_no_number() -> str:
        return ""

    with pytest.raises(ValueError, match=f"out of sequence: it follows {last}"):
        migrations.migration(m005_late)
    with pytest.raises(ValueError, match="mNNN_"):
        migrations.migration(late_no_number)


def test_blank_and_oldest_schema_migrate_to_the_same_schema(tmp_path, monkeypatch):
    blank = _connect(tmp_path / "blank.db")
    assert migrations.apply(blank) == [name for name, _ in migrations.MIGRATIONS]

    oldest_dir = tmp_path / "oldest"
    oldest_dir.mkdir()
    oldest = _connect(oldest_dir / DB_FILE)
    _apply_only(oldest, ["m001_initial"], monkeypatch)
    oldest.close()
    store = Store.open(oldest_dir)  # the store migrates itself when it opens
    assert _applied(store.db) == [name for name, _ in migrations.MIGRATIONS]
    assert _schema(store.db) == _schema(blank)
    assert migrations.apply(store.db) == []


@pytest.mark.parametrize("stop", [len(LEGACY_ORDER), 2])
def test_database_migrated_in_the_old_file_order_keeps_working(tmp_path, monkeypatch, stop):
    blank = _connect(tmp_path / "blank.db")
    migrations.apply(blank)
    legacy = _connect(tmp_path / "legacy.db")
    _apply_only(legacy, LEGACY_ORDER[:stop], monkeypatch)
    expected_rest = [name for name, _ in migrations.MIGRATIONS if name not in LEGACY_ORDER[:stop]]
    assert migrations.apply(legacy) == expected_rest
    assert _schema(legacy) == _schema(blank)
