"""Ordered schema migrations, recorded in ``schema_migrations``; the store applies the missing
ones when it opens (the approach of simonw/llm's ``migrations.py``). Never edit a released
migration: add a new one. Later stages append theirs to ``MIGRATIONS``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

# A migration returns the SQL it needs; ``apply`` runs it with its bookkeeping row inside one
# BEGIN ... COMMIT script, because sqlite3's executescript() would commit any transaction
# opened around it.
Migration = Callable[[], str]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def apply(db: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction. Returns their names."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    done = {row[0] for row in db.execute("SELECT name FROM schema_migrations")}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        assert "'" not in name
        script = f"BEGIN;\n{fn()}\nINSERT INTO schema_migrations VALUES ('{name}', datetime('now'));\nCOMMIT;"
        try:
            db.executescript(script)  # applied whole or not at all
        except Exception:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


@migration
def m001_initial() -> str:
    return """
        CREATE TABLE projects (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            root TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id),
            stage TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
            spec_json TEXT NOT NULL,
            config_json TEXT NOT NULL DEFAULT '{}',
            summary_json TEXT NOT NULL DEFAULT '{}',
            pid INTEGER,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            error TEXT
        );
        CREATE TABLE candidates (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id),
            name TEXT NOT NULL,
            stage TEXT NOT NULL,
            model_ref TEXT NOT NULL,
            config_json TEXT NOT NULL DEFAULT '{}',
            parent_id INTEGER REFERENCES candidates(id),
            run_id INTEGER REFERENCES runs(id),
            created_at TEXT NOT NULL,
            UNIQUE (project_id, name)
        );
        CREATE TABLE metrics (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            candidate_id INTEGER REFERENCES candidates(id),
            split TEXT,
            name TEXT NOT NULL,
            value REAL NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX metrics_candidate ON metrics(candidate_id, split, name);
        CREATE TABLE outputs (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            candidate_id INTEGER REFERENCES candidates(id),
            split TEXT,
            example_id TEXT,
            prompt TEXT NOT NULL,
            prediction TEXT NOT NULL,
            references_json TEXT NOT NULL DEFAULT '[]',
            scores_json TEXT NOT NULL DEFAULT '{}',
            latency_ms REAL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX outputs_run ON outputs(run_id);
        CREATE TABLE artifacts (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
    """


# ---- stage migrations: each stage appends its own below, named mNNN_<stage>_<what> ----------
# (foundation 001-009, select 010-019, adapt 020-029, align 030-039, optimize 040-049,
#  deploy 050-059, augment 060-069). Never edit one that has been committed.
