"""Ordered schema migrations, recorded in ``schema_migrations``; the store applies the missing
ones when it opens (the approach of simonw/llm's ``migrations.py``). Never edit a released
migration: add a new one, with the next number, at the end of its stage's block.

They run in strictly increasing number order, which is also the order of this file: ``migration``
refuses (at import) a name that is not ``mNNN_<what>`` or whose number is not above the last one.
The order was once 001, 050, 030, 010, 060, 040 (file order); it changed to sequence without
renaming any migration or touching its SQL, so existing databases, whose ``schema_migrations``
rows hold the names, keep working (the released migrations depend only on 001).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

# A migration returns the SQL it needs; ``apply`` runs it with its bookkeeping row inside one
# BEGIN ... COMMIT script, because sqlite3's executescript() would commit any transaction
# opened around it.
Migration = Callable[[], str]
MIGRATIONS: list[tuple[str, Migration]] = []


_NAME = re.compile(r"m(\d{3})_\w+")


def number(name: str) -> int:
    """The sequence number of a migration named ``mNNN_<what>``."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"migration {name!r} is not named mNNN_<what>")
    return int(match.group(1))


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration; its number must be above every earlier one."""
    n = number(fn.__name__)
    if MIGRATIONS and n <= number(MIGRATIONS[-1][0]):
        raise ValueError(f"migration {fn.__name__} is out of sequence: it follows {MIGRATIONS[-1][0]}")
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


# ---- select (010-019) ------------------------------------------------------------------------
@migration
def m010_select_tables() -> str:
    # select: the choice `odyssey select` made (with its whole ranking), lm-eval benchmark scores,
    # and pretraining corpora/curation reports.
    return """
        CREATE TABLE selections (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id),
            run_id INTEGER REFERENCES runs(id),
            chosen TEXT,
            split TEXT NOT NULL,
            n_examples INTEGER NOT NULL,
            ranking_json TEXT NOT NULL DEFAULT '[]',
            created_at TEXT NOT NULL
        );
        CREATE TABLE benchmark_scores (
            id INTEGER PRIMARY KEY,
            project_id INTEGER REFERENCES projects(id),
            run_id INTEGER REFERENCES runs(id),
            model_ref TEXT NOT NULL,
            task TEXT NOT NULL,
            metric TEXT NOT NULL,
            value REAL NOT NULL,
            stderr REAL,
            n_samples INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE INDEX benchmark_scores_model ON benchmark_scores(model_ref, task);
    """


# ---- align (030-039) -------------------------------------------------------------------------
@migration
def m030_align_preferences() -> str:
    # A preference set is an immutable, content-hashed collection of pairs; each pair keeps its
    # provenance (source, annotator) and, for AI feedback, the judge's prompt and verdict in meta_json.
    return """
        CREATE TABLE preference_sets (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id),
            name TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            n_pairs INTEGER NOT NULL,
            sources_json TEXT NOT NULL DEFAULT '{}',
            path TEXT,
            run_id INTEGER REFERENCES runs(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX preference_sets_hash ON preference_sets(project_id, sha256);
        CREATE TABLE preference_pairs (
            id INTEGER PRIMARY KEY,
            set_id INTEGER NOT NULL REFERENCES preference_sets(id),
            prompt TEXT NOT NULL,
            chosen TEXT NOT NULL,
            rejected TEXT NOT NULL,
            source TEXT NOT NULL,
            annotator TEXT,
            meta_json TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX preference_pairs_set ON preference_pairs(set_id);
        CREATE TABLE reward_models (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id),
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            base_ref TEXT NOT NULL,
            preference_set_id INTEGER REFERENCES preference_sets(id),
            metrics_json TEXT NOT NULL DEFAULT '{}',
            run_id INTEGER REFERENCES runs(id),
            created_at TEXT NOT NULL
        );
    """


# ---- optimize (040-049) ----------------------------------------------------------------------
@migration
def m040_optimize_measurements() -> str:
    # One row per measured model (an optimized candidate or its parent) under one set of
    # measurement settings (settings_key): size, memory, speed, latency and quality, plus the
    # comparison with the parent. Parents are measured once per settings_key and reused.
    return """
        CREATE TABLE optimize_measurements (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id),
            candidate_id INTEGER REFERENCES candidates(id),
            parent_id INTEGER REFERENCES candidates(id),
            run_id INTEGER REFERENCES runs(id),
            model_ref TEXT NOT NULL,
            method TEXT,
            backend TEXT,
            settings_key TEXT NOT NULL,
            size_mb REAL,
            load_rss_gb REAL,
            peak_rss_gb REAL,
            prefill_tok_s REAL,
            decode_tok_s REAL,
            decode_tok_s_batched REAL,
            p50_latency_ms REAL,
            p95_latency_ms REAL,
            metrics_json TEXT NOT NULL DEFAULT '{}',
            comparison_json TEXT NOT NULL DEFAULT '{}',
            detail_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE INDEX optimize_measurements_candidate ON optimize_measurements(candidate_id, settings_key);
    """


# ---- deploy (050-059) ------------------------------------------------------------------------
@migration
def m050_deploy_keys_capture_feedback() -> str:
    # API keys are stored as sha256 of a 256-bit random secret (a slow KDF buys nothing for
    # high-entropy keys and would cost every request). Requests and feedback are the align
    # stage's raw material; preference_queue holds pairs waiting for a person to choose.
    return """
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            project_id INTEGER REFERENCES projects(id),
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            scopes_json TEXT NOT NULL DEFAULT '[]',
            rate_limit_rpm INTEGER,
            max_concurrency INTEGER,
            created_at TEXT NOT NULL,
            revoked_at TEXT,
            last_used_at TEXT
        );
        CREATE TABLE serve_requests (
            id INTEGER PRIMARY KEY,
            request_id TEXT NOT NULL UNIQUE,
            project_id INTEGER REFERENCES projects(id),
            key_id INTEGER REFERENCES api_keys(id),
            candidate TEXT,
            endpoint TEXT NOT NULL,
            params_json TEXT NOT NULL DEFAULT '{}',
            prompt_json TEXT NOT NULL DEFAULT 'null',
            rendered_prompt TEXT,
            output TEXT,
            status INTEGER NOT NULL,
            error TEXT,
            finish_reason TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_ms REAL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX serve_requests_candidate ON serve_requests(candidate, id);
        CREATE TABLE feedback (
            id INTEGER PRIMARY KEY,
            project_id INTEGER REFERENCES projects(id),
            request_id TEXT,
            key_id INTEGER REFERENCES api_keys(id),
            kind TEXT NOT NULL CHECK (kind IN ('rating', 'thumbs', 'correction', 'preference')),
            rating REAL,
            thumbs INTEGER,
            prompt TEXT,
            output TEXT,
            correction TEXT,
            chosen TEXT,
            rejected TEXT,
            candidate TEXT,
            source TEXT,
            annotator TEXT,
            comment TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX feedback_request ON feedback(request_id);
        CREATE TABLE preference_queue (
            id INTEGER PRIMARY KEY,
            project_id INTEGER REFERENCES projects(id),
            prompt TEXT NOT NULL,
            a_text TEXT NOT NULL,
            b_text TEXT NOT NULL,
            a_label TEXT,
            b_label TEXT,
            source TEXT,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'skipped')),
            choice TEXT,
            annotator TEXT,
            feedback_id INTEGER REFERENCES feedback(id),
            created_at TEXT NOT NULL,
            decided_at TEXT
        );
        CREATE INDEX preference_queue_status ON preference_queue(status, id);
    """


# ---- augment (060-069) -----------------------------------------------------------------------
@migration
def m060_augment_traces() -> str:
    # augment: one row per question answered by a technique (RAG, CoT, PAL, ReAct): the answer and
    # the full trace (retrieved sources, sampled chains, programs and their sandbox results, agent steps).
    return """
        CREATE TABLE augment_traces (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            candidate_id INTEGER REFERENCES candidates(id),
            example_id TEXT,
            technique TEXT NOT NULL,
            question TEXT NOT NULL,
            answer TEXT,
            correct INTEGER,
            error TEXT,
            trace_json TEXT NOT NULL DEFAULT '[]',
            created_at TEXT NOT NULL
        );
        CREATE INDEX augment_traces_run ON augment_traces(run_id);
    """


# ---- pipeline (070-079) ----------------------------------------------------------------------
@migration
def m070_pipeline_steps() -> str:
    # `odyssey run`: one row per attempt at a pipeline step, keyed by the hash of the step's inputs (spec
    # section, data, parent candidate, code version). A succeeded row with the same hash makes the step
    # cached; a running row whose process died (kill -9) is the step to resume. outcome_json holds what
    # the step made (candidate names, run ids, a preference set or reward model id).
    return """
        CREATE TABLE pipeline_steps (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id),
            pipeline_run_id INTEGER REFERENCES runs(id),
            step TEXT NOT NULL,
            stage TEXT NOT NULL,
            input_hash TEXT NOT NULL,
            inputs_json TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
            resumed INTEGER NOT NULL DEFAULT 0,
            outcome_json TEXT NOT NULL DEFAULT '{}',
            pid INTEGER,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            wall_s REAL,
            error TEXT
        );
        CREATE INDEX pipeline_steps_step ON pipeline_steps(project_id, step, id);
    """
