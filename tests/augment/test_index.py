"""Collections: LanceDB + BM25 hybrid retrieval over the shipped documents, and incremental
re-ingestion (only changed files are re-embedded; deleted files disappear from search)."""

import shutil

import pytest

from odyssey.augment.evaluate import grounded_docs_dir, grounded_questions
from odyssey.augment.index import Collection

EMBEDDER = "packaged:all-minilm-l6-v2"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    coll = Collection(tmp_path_factory.mktemp("coll") / "kb", "kb", embedder=EMBEDDER)
    report = coll.ingest([grounded_docs_dir()], base=grounded_docs_dir())
    assert len(report.added) == 6 and report.total_chunks == coll.count() > 6
    return coll


@pytest.mark.parametrize("mode", ["hybrid", "vector", "bm25"])
def test_recall_at_5_on_the_grounded_questions(shipped, mode):
    items = [q for q in grounded_questions() if q["answerable"]]
    results = shipped.search_many([q["question"] for q in items], k=5, mode=mode)
    recall = sum(any(h.source == q["source"] for h in hits) for q, hits in zip(items, results)) / len(items)
    assert recall >= 0.9, recall
    assert all(len(hits) <= 5 for hits in results)


def test_hits_carry_scores_ranks_and_citations(shipped):
    hits = shipped.search("How long is the return window for winter sale items?", k=3)
    top = hits[0]
    assert top.source == "returns-and-refunds.md" and "14 days" in top.text
    assert top.section == "Refund window" and top.citation == "returns-and-refunds.md § Refund window"
    assert top.rank_vector is not None and top.rank_bm25 is not None and 0.3 < top.similarity <= 1.0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    off_topic = shipped.search("quantum chromodynamics lattice gauge theory", k=3, mode="vector")
    assert max(h.similarity for h in off_topic) < 0.35  # below the default min_similarity


def test_reingest_touches_only_changed_files_and_propagates_deletions(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Stoves\n\nThe Alpine stove boils a litre of water in 4 minutes.\n")
    (docs / "b.txt").write_text("Lanterns\n\nThe Glow lantern runs for 40 hours on one battery.\n")
    (docs / "c.html").write_text("<h1>Maps</h1><p>The trail map of the Brenner loop costs 9 euros.</p>")
    coll = Collection(tmp_path / "coll", "c", embedder=EMBEDDER)
    first = coll.ingest([docs], base=tmp_path)
    assert sorted(first.added) == ["docs/a.md", "docs/b.txt", "docs/c.html"] and first.total_chunks == 3

    again = coll.ingest([docs], base=tmp_path)
    assert again.added == again.updated == again.removed == [] and len(again.unchanged) == 3
    assert again.chunks_added == 0 and again.total_chunks == 3

    (docs / "a.md").write_text(
        "# Stoves\n\nThe Alpine stove now boils a litre in 3 minutes.\n\n## Fuel\n\nIt burns gas.\n"
    )
    (docs / "b.txt").unlink()
    changed = coll.ingest([docs], base=tmp_path)
    assert changed.updated == ["docs/a.md"] and changed.removed == ["docs/b.txt"]
    assert changed.unchanged == ["docs/c.html"]
    assert changed.chunks_removed == 2 and changed.chunks_added == 2 and changed.total_chunks == 3
    for mode in ("vector", "bm25", "hybrid"):
        texts = [h.text for h in coll.search("lantern battery hours", k=5, mode=mode)]
        assert not any("Glow lantern" in t for t in texts), mode
        assert not any("4 minutes" in h.text for h in coll.search("Alpine stove minutes", k=5, mode=mode))
    assert "3 minutes" in coll.search("How fast does the Alpine stove boil water?", k=1)[0].text

    reopened = Collection(tmp_path / "coll", "c", embedder=EMBEDDER)  # state survives a new process
    assert reopened.count() == 3 and reopened.sources() == ["docs/a.md", "docs/c.html"]
    assert reopened.search("trail map price", k=1, mode="bm25")[0].source == "docs/c.html"

    shutil.rmtree(docs)
    docs.mkdir()
    (docs / "d.md").write_text("# Knots\n\nThe bowline makes a fixed loop.\n")
    last = coll.ingest([docs], base=tmp_path)
    assert sorted(last.removed) == ["docs/a.md", "docs/c.html"] and last.total_chunks == 1


def test_bad_collection_names_and_modes(tmp_path):
    from odyssey.errors import OdysseyError

    with pytest.raises(OdysseyError, match="not allowed"):
        Collection(tmp_path / "x", "../escape", embedder=EMBEDDER)
    coll = Collection(tmp_path / "empty", "empty", embedder=EMBEDDER)
    assert coll.search("anything") == []
    with pytest.raises(OdysseyError, match="unknown retrieval mode"):
        coll.ingest([grounded_docs_dir() / "warranty.txt"])
        coll.search("warranty", mode="fuzzy")


def test_optional_cross_encoder_reranker(shipped, tmp_path):
    from odyssey.errors import OdysseyError
    from odyssey.models import parse_ref, resolve

    cross = str(resolve(parse_ref("tiny:bert")))  # a real (tiny, random) BERT loaded as a CrossEncoder
    plain = shipped.search("warranty years for tents", k=10)
    reranked = shipped.search("warranty years for tents", k=3, reranker=cross)
    assert len(reranked) == 3 and all(h.rerank_score is not None for h in reranked)
    assert [h.rerank_score for h in reranked] == sorted((h.rerank_score for h in reranked), reverse=True)
    assert {h.id for h in reranked} <= {h.id for h in shipped.search("warranty years for tents", k=20)}
    assert plain[0].rerank_score is None
    with pytest.raises(OdysseyError, match="could not load re-ranker"):
        shipped.search("warranty", reranker=str(tmp_path / "no-such-model"))
