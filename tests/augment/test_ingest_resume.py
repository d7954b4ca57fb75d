"""RAG ingestion under kill -9 (issue 26): killed where it hurts most (new chunks in the table, the BM25
index and the manifest not yet written), then run again with `odyssey rag ingest`, the collection is the
one an uninterrupted ingestion builds: the same rows once each, the same BM25 ids, the same answers to
searches; and the killed run's half is never taken for a finished ingestion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from odyssey.augment.index import Collection
from odyssey.project import Project
from tests.conftest import kill_9_at_ready, tiny_project

JOB = Path(__file__).with_name("_ingest_job.py")
REPO = Path(__file__).resolve().parents[2]
DOCS = {
    "stoves.md": "# Stoves\n\nThe Alpine stove boils a litre of water in 4 minutes.\n\n## Fuel\n\nIt burns gas.\n",
    "lanterns.txt": "Lanterns\n\nThe Glow lantern runs for 40 hours on one battery.\n",
    "maps.html": "<h1>Maps</h1><p>The trail map of the Brenner loop costs 9 euros.</p>",
    "knots.md": "# Knots\n\nThe bowline makes a fixed loop. The clove hitch binds to a post.\n",
}
QUERIES = ["How fast does the stove boil water?", "lantern battery hours", "price of the trail map", "fixed loop knot"]


def _project(root: Path, docs: dict[str, str]) -> Path:
    tiny_project(root)
    (root / "docs").mkdir()
    for name, text in docs.items():
        (root / "docs" / name).write_text(text)
    return root


def _env() -> dict:
    return {**os.environ, "ODYSSEY_QUIET": "1", "PYTHONPATH": str(REPO)}


def _kill_at_added(root: Path) -> None:
    line = kill_9_at_ready([sys.executable, str(JOB), str(root), "--hang-at", "added"], _env())
    assert int(line.split()[1]) > 0  # rows were in the table


def _cli_ingest(root: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "odyssey.cli", "rag", "ingest", str(root / "docs"), "-p", str(root), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def _snapshot(root: Path) -> dict:
    coll = Collection.for_project(Project.load(root), must_exist=True)
    rows = sorted(coll.table().to_arrow().to_pylist(), key=lambda r: r["id"])
    ids = [r["id"] for r in rows]
    files = {k: (v["sha256"], v["chunks"]) for k, v in coll.manifest["files"].items()}
    bm25_ids = json.loads((coll.path / "bm25" / "ids.json").read_text())
    return {
        "ids": ids,
        "rows": [(r["id"], r["source"], r["section"], r["idx"], r["text"]) for r in rows],
        "vectors": np.array([r["vector"] for r in rows]),
        "files": files,
        "bm25_ids": sorted(bm25_ids),
        "hits": [[(h.id, h.rank_vector, h.rank_bm25) for h in coll.search(q, k=3)] for q in QUERIES],
    }


def _assert_same(got: dict, want: dict) -> None:
    assert len(got["ids"]) == len(set(got["ids"])), "a chunk is in the table twice"
    assert got["rows"] == want["rows"] and got["files"] == want["files"]
    assert got["bm25_ids"] == got["ids"] == want["bm25_ids"]
    np.testing.assert_allclose(got["vectors"], want["vectors"], atol=1e-5)
    assert got["hits"] == want["hits"]


def test_kill_9_of_a_first_ingestion_then_rerun_gives_the_uninterrupted_collection(tmp_path):
    """A file deleted between the kill and the rerun leaves no row behind (no manifest ever named it)."""
    killed = _project(tmp_path / "killed", DOCS)
    _kill_at_added(killed)
    coll = Collection.for_project(Project.load(killed))
    assert not coll.exists and coll.count() > 0  # rows in the table, but no finished ingestion
    (killed / "docs" / "lanterns.txt").unlink()
    report = _cli_ingest(killed)
    assert sorted(report["added"]) == ["docs/knots.md", "docs/maps.html", "docs/stoves.md"]

    from odyssey.augment.api import ingest

    whole = _project(tmp_path / "whole", {k: v for k, v in DOCS.items() if k != "lanterns.txt"})
    ingest(Project.load(whole), ["docs"])
    _assert_same(_snapshot(killed), _snapshot(whole))
    assert not any("Glow lantern" in row[4] for row in _snapshot(killed)["rows"])


def test_kill_9_of_a_reingestion_then_rerun_gives_the_uninterrupted_collection(tmp_path):
    """Killed while re-reading a changed file and dropping a deleted one: the old manifest still stands, so
    the rerun does both again, and the table holds no chunk of the old text and no chunk twice."""
    from odyssey.augment.api import ingest

    changed = "# Stoves\n\nThe Alpine stove now boils a litre in 3 minutes.\n\n## Weight\n\nIt weighs 300 g.\n"
    roots = {}
    for name in ("killed", "whole"):
        root = roots[name] = _project(tmp_path / name, DOCS)
        ingest(Project.load(root), ["docs"])
        (root / "docs" / "stoves.md").write_text(changed)
        (root / "docs" / "knots.md").unlink()
    before = Collection.for_project(Project.load(roots["killed"])).manifest["files"]
    _kill_at_added(roots["killed"])
    assert Collection.for_project(Project.load(roots["killed"])).manifest["files"] == before
    report = _cli_ingest(roots["killed"])
    assert report["updated"] == ["docs/stoves.md"] and report["removed"] == ["docs/knots.md"]
    ingest(Project.load(roots["whole"]), ["docs"])
    got = _snapshot(roots["killed"])
    _assert_same(got, _snapshot(roots["whole"]))
    assert not any("4 minutes" in row[4] or "bowline" in row[4] for row in got["rows"])
