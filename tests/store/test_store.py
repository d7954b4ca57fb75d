import os
import sqlite3
import subprocess
import sys

import pytest

from odyssey.store import Store, migrations


def test_migrations_apply_once_and_are_recorded(tmp_path):
    store = Store.open(tmp_path)
    # rowid order is the order applied (a bare SELECT may walk the name index instead)
    names = [r[0] for r in store.db.execute("SELECT name FROM schema_migrations ORDER BY rowid")]
    assert names == [name for name, _ in migrations.MIGRATIONS]
    assert migrations.apply(store.db) == []  # second open applies nothing
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_failed_migration_leaves_nothing_behind(tmp_path, monkeypatch):
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    broken = [("m999_broken", lambda: "CREATE TABLE half (x INTEGER); INSERT INTO nowhere VALUES (1);")]
    monkeypatch.setattr(migrations, "MIGRATIONS", broken)
    with pytest.raises(sqlite3.OperationalError):
        migrations.apply(db)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half" not in tables
    assert db.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == 0


def test_run_lifecycle_metrics_outputs_artifacts(tmp_path):
    store = Store.open(tmp_path)
    store.ensure_project("p", tmp_path)
    with store.run("evaluate", {"name": "p"}, {"k": 1}) as run:
        cid = store.upsert_candidate("c1", "select", "tiny:llama", {"prompt": {}}, run_id=run.id)
        run.log_metrics({"rougeL": 0.25, "bleu": 0.1}, candidate_id=cid, split="test")
        run.log_metrics({"rougeL": 0.31}, candidate_id=cid, split="test")
        store.add_outputs(
            run.id,
            [{"prompt": "p", "prediction": "y", "references": ["a", "b"], "scores": {"r": 1}}],
            candidate_id=cid,
            split="test",
        )
        f = tmp_path / "report.json"
        f.write_text("{}")
        info = run.add_artifact(f, "report")
    assert store.get_run(run.id)["status"] == "succeeded"
    assert store.latest_metrics(cid, "test") == {"bleu": 0.1, "rougeL": 0.31}
    assert store.outputs(run.id)[0]["references"] == ["a", "b"]
    assert info["sha256"] == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert os.path.exists(info["path"]) and f"run-{run.id}" in info["path"]
    # Same name updates in place
    assert store.upsert_candidate("c1", "prompt", "tiny:gpt2") == cid
    assert store.candidate("c1")["model_ref"] == "tiny:gpt2"


def test_crash_marks_run_failed_and_keeps_what_was_written(tmp_path):
    store = Store.open(tmp_path)
    store.ensure_project("p", tmp_path)
    with pytest.raises(RuntimeError):
        with store.run("prompt", {}) as run:
            run.log_metrics({"rougeL": 0.2})
            raise RuntimeError("boom")
    row = store.get_run(run.id)
    assert row["status"] == "failed" and "boom" in row["error"]
    assert store.metrics_for_run(run.id)[0]["value"] == 0.2


def test_killed_process_run_is_marked_failed_on_next_open(tmp_path):
    code = (
        "import os, sys; from odyssey.store import Store; s = Store.open(sys.argv[1]); s.ensure_project('p', '.');"
        "s.start_run('adapt', {}); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    store = Store.open(tmp_path)
    run = store.db.execute("SELECT status, error FROM runs").fetchone()
    assert run["status"] == "failed" and "interrupted" in run["error"]


def test_sql_is_parameterized(tmp_path):
    store = Store.open(tmp_path)
    store.ensure_project("x'); DROP TABLE runs; --", tmp_path)
    assert store.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_project_artifacts_by_kind_newest_first_and_only_this_projects(tmp_path):
    # what the web UI's plot routes read (deploy/server.py) without SQL of their own
    store = Store.open(tmp_path)
    other = Store.open(tmp_path)
    other.ensure_project("other", tmp_path)
    with other.run("evaluate", {}) as run:
        (tmp_path / "theirs.png").write_bytes(b"x")
        theirs = run.add_artifact(tmp_path / "theirs.png", "report-plot")
    store.ensure_project("p", tmp_path)
    ids = []
    with store.run("evaluate", {}) as run:
        for name, kind in [("a.png", "report-plot"), ("r.json", "report"), ("b.png", "report-plot")]:
            (tmp_path / name).write_bytes(b"y")
            run.add_artifact(tmp_path / name, kind)
        ids = [a["id"] for a in store.artifacts(run.id)]
    plots = store.project_artifacts("report-plot")
    assert [a["id"] for a in plots] == [ids[2], ids[0]] and plots[0]["run_id"] == run.id
    assert [a["id"] for a in store.project_artifacts("report-plot", limit=1)] == [ids[2]]
    assert store.project_artifact(ids[0], "report-plot")["path"].endswith("a.png")
    assert store.project_artifact(ids[1], "report-plot") is None  # another kind
    theirs_id = other.db.execute("SELECT id FROM artifacts WHERE path = ?", (theirs["path"],)).fetchone()[0]
    assert store.project_artifact(theirs_id, "report-plot") is None  # another project's
