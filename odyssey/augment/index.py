"""A collection: chunks of documents in an embedded vector store (LanceDB) plus a BM25 index
(bm25s), searched by hybrid retrieval with reciprocal-rank fusion and an optional re-ranker.

Why LanceDB: it is embedded (a folder of Lance/Arrow files beside the run store, no server),
installs from wheels, works offline, supports adds and deletes in place (so re-ingesting a
changed file touches only its chunks) and builds ANN indexes when a collection grows past what
brute force serves well. sqlite-vec was the other candidate (one SQLite file like the run store),
but Python's stdlib sqlite3 here is built without ``enable_load_extension``; Chroma pulls in a
server stack (onnxruntime, FastAPI, gRPC) that an embedded index does not need.

Why bm25s: maintained, fast (sparse matrices), saves and loads its index. BM25 indexes are
rebuilt from the stored chunk texts after each ingest (10k chunks take well under a second).

Layout of ``.odyssey/collections/<name>/``: ``lance/`` (table ``chunks``), ``bm25/`` (index and
chunk-id order), ``manifest.json`` (embedder, chunking, and per file: sha256 and chunk ids).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError, require

TABLE = "chunks"
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al., 2009)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Hit:
    id: str
    source: str
    title: str
    section: str
    page: int | None
    text: str
    score: float
    similarity: float | None = None
    rank_vector: int | None = None
    rank_bm25: int | None = None
    rerank_score: float | None = None

    @property
    def citation(self) -> str:
        where = self.source + (f" p.{self.page}" if self.page else "")
        return f"{where} § {self.section}" if self.section else where

    def as_dict(self) -> dict:
        return {**asdict(self), "citation": self.citation}


@dataclass
class IngestReport:
    collection: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    total_chunks: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _bm25s():
    return require("bm25s", "augment", "BM25 keyword retrieval")


def collections_dir(project) -> Path:
    return Path(project.state_dir) / "collections"


def list_collections(project) -> list[dict]:
    root = collections_dir(project)
    out = []
    for path in sorted(root.glob("*/manifest.json")) if root.exists() else []:
        manifest = json.loads(path.read_text())
        out.append(
            {
                "name": path.parent.name,
                "files": len(manifest["files"]),
                "chunks": sum(len(f["chunks"]) for f in manifest["files"].values()),
                "embedder": manifest["embedder"],
            }
        )
    return out


class Collection:
    def __init__(self, path: Path, name: str, *, embedder: str, chunk_size: int = 120, chunk_overlap: int = 24):
        if not NAME_RE.match(name):
            raise OdysseyError(
                f"collection name {name!r} is not allowed",
                hint="use letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        self.path, self.name = Path(path), name
        self.manifest_path = self.path / "manifest.json"
        if self.manifest_path.exists():
            self.manifest = json.loads(self.manifest_path.read_text())
        else:
            self.manifest = {
                "name": name,
                "embedder": embedder,
                "chunk_size": chunk_size,
                "chunk_overlap": chunk_overlap,
                "files": {},
            }
        self._table = None
        self._bm25 = None
        self._bm25_ids: list[str] | None = None
        self._reranker = None

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def for_project(cls, project, name: str | None = None, *, must_exist: bool = False) -> Collection:
        cfg = project.spec.augment
        name = name or cfg.collection
        coll = cls(
            collections_dir(project) / name,
            name,
            embedder=cfg.embedder,
            chunk_size=cfg.chunk_size,
            chunk_overlap=cfg.chunk_overlap,
        )
        if must_exist and not coll.exists:
            known = ", ".join(c["name"] for c in list_collections(project)) or "none yet"
            raise OdysseyError(
                f"no collection named {name!r} in {project.root}",
                hint=f"create it with `odyssey rag ingest DOCS --collection {name}` (collections: {known})",
            )
        return coll

    @property
    def exists(self) -> bool:
        return self.manifest_path.exists()

    @property
    def embedder(self) -> str:
        return self.manifest["embedder"]

    def _db(self):
        lancedb = require("lancedb", "augment", "a RAG collection")
        return lancedb.connect(str(self.path / "lance"))

    def table(self):
        if self._table is None:
            db = self._db()
            names = db.list_tables()
            names = getattr(names, "tables", names)
            self._table = db.open_table(TABLE) if TABLE in names else None
        return self._table

    def count(self) -> int:
        table = self.table()
        return table.count_rows() if table is not None else 0

    def sources(self) -> list[str]:
        return sorted(self.manifest["files"])

    # ---- ingestion ----------------------------------------------------------------------------
    def ingest(self, paths: list[Path], *, base: Path | None = None) -> IngestReport:
        """Add new files, re-index changed ones, drop chunks of files that were deleted.

        Files are keyed by their path relative to ``base`` (the project folder) when inside it.
        A file is unchanged when its sha256 matches the manifest; then nothing is embedded.
        """
        from odyssey import ui
        from odyssey.augment.documents import chunk_document, find_files, read_document
        from odyssey.store import sha256_file

        started = time.perf_counter()
        report = IngestReport(self.name)
        base = Path(base).resolve() if base else None
        files = find_files([Path(p) for p in paths])
        if not files:
            raise OdysseyError(
                f"no .md, .txt, .html or .pdf files under {', '.join(map(str, paths))}",
                hint="point `odyssey rag ingest` at a folder of documents",
            )
        roots = [Path(p).resolve() for p in paths]

        def key(path: Path) -> str:
            return str(path.relative_to(base)) if base and path.is_relative_to(base) else str(path)

        known = self.manifest["files"]
        seen = {key(f): f for f in files}
        stale_ids: list[str] = []
        # Deletions propagate: a file in the manifest that is gone from disk, or from an ingested folder.
        for name, entry in list(known.items()):
            absolute = Path(entry["path"])
            under_root = any(absolute == r or absolute.is_relative_to(r) for r in roots)
            if name not in seen and (not absolute.exists() or under_root):
                stale_ids += entry["chunks"]
                report.removed.append(name)
                del known[name]
        new_chunks = []
        with ui.progress(f"reading documents into {self.name}", total=len(files)) as bar:
            for name, path in seen.items():
                digest = sha256_file(path)
                entry = known.get(name)
                if entry and entry["sha256"] == digest:
                    report.unchanged.append(name)
                    bar.advance()
                    continue
                chunks = chunk_document(
                    read_document(path), name, self.manifest["chunk_size"], self.manifest["chunk_overlap"]
                )
                if entry:
                    stale_ids += entry["chunks"]
                    report.updated.append(name)
                else:
                    report.added.append(name)
                known[name] = {
                    "path": str(path),
                    "sha256": digest,
                    "chunks": [c.id for c in chunks],
                    "ingested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                new_chunks += chunks
                bar.advance()
        self._write(new_chunks, stale_ids + self._unrecorded(known))
        report.chunks_added, report.chunks_removed = len(new_chunks), len(stale_ids)
        report.total_chunks = self.count()
        report.seconds = time.perf_counter() - started
        return report

    def _unrecorded(self, files: dict) -> list[str]:
        """Rows that no manifest entry names: a run killed before its manifest was written added them, for
        files that may be gone now (rows for files still there are replaced by their re-reading)."""
        table = self.table()
        if table is None:
            return []
        recorded = {c for entry in files.values() for c in entry["chunks"]}
        return [i for i in table.to_arrow().select(["id"]).to_pydict()["id"] if i not in recorded]

    def add_chunks(self, chunks, batch_size: int = 64) -> None:
        """Add already-made chunks (benchmarks build large synthetic collections this way)."""
        self._write(list(chunks), [], batch_size=batch_size)

    def _write(self, chunks, stale_ids: list[str], batch_size: int = 64) -> None:
        """Table, then BM25 index, then manifest: the manifest is the mark of a finished ingestion.

        A ``kill -9`` at any point leaves the manifest of the last finished run, so the next run re-reads
        every file that was under way; deleting the new chunks' ids before adding them (ids are digests of
        source, position and text) keeps that rerun from adding them twice. LanceDB commits each delete and
        add whole, and the BM25 folder is replaced atomically, so no reader meets half of either."""
        import numpy as np

        from odyssey import ui
        from odyssey.models.embeddings import embed

        self.path.mkdir(parents=True, exist_ok=True)
        table = self.table()
        doomed = stale_ids + [c.id for c in chunks]
        if doomed and table is not None:
            # Chunk ids are our own hex digests, so the filter string cannot be injected into.
            for i in range(0, len(doomed), 500):
                ids = ", ".join(f"'{c}'" for c in doomed[i : i + 500] if re.fullmatch(r"[0-9a-f]+", c))
                if ids:
                    table.delete(f"id IN ({ids})")
        if chunks:
            vectors = []
            with ui.progress(f"embedding {len(chunks)} chunks", total=len(chunks)) as bar:
                for i in range(0, len(chunks), 256):
                    part = chunks[i : i + 256]
                    vectors.append(embed([c.embed_text for c in part], self.embedder, batch_size=batch_size))
                    bar.advance(len(part))
            matrix = np.concatenate(vectors).astype("float32")
            rows = [
                {
                    "id": c.id,
                    "source": c.source,
                    "title": c.title,
                    "section": c.section,
                    "page": c.page or 0,
                    "idx": c.index,
                    "text": c.text,
                    "embed_text": c.embed_text,
                    "vector": matrix[i],
                }
                for i, c in enumerate(chunks)
            ]
            if table is None:
                self._table = self._db().create_table(TABLE, data=rows)
            else:
                table.add(rows)
        self._rebuild_bm25()
        self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=1))
        tmp.replace(self.manifest_path)  # atomic: a crash leaves the old or the new manifest

    def _rebuild_bm25(self) -> None:
        bm25s = _bm25s()

        table = self.table()
        folder = self.path / "bm25"
        if table is None or table.count_rows() == 0:
            self._bm25, self._bm25_ids = None, []
            (folder / "ids.json").unlink(missing_ok=True)
            return
        from odyssey.models.checkpoint import atomic_dir

        data = table.to_arrow().select(["id", "embed_text"]).to_pydict()
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(data["embed_text"], stopwords="en", show_progress=False), show_progress=False)
        with atomic_dir(folder) as tmp:  # the index and its ids.json are replaced together or not at all
            retriever.save(str(tmp))
            (tmp / "ids.json").write_text(json.dumps(data["id"]))
        self._bm25, self._bm25_ids = retriever, data["id"]

    def _load_bm25(self):
        if self._bm25 is None:
            bm25s = _bm25s()

            folder = self.path / "bm25"
            if (folder / "ids.json").exists():
                self._bm25 = bm25s.BM25.load(str(folder))
                self._bm25_ids = json.loads((folder / "ids.json").read_text())
        return self._bm25

    # ---- search -------------------------------------------------------------------------------
    def search(self, query: str, k: int = 4, **kw) -> list[Hit]:
        return self.search_many([query], k, **kw)[0]

    def search_many(
        self,
        queries: list[str],
        k: int = 4,
        *,
        mode: str = "hybrid",
        candidates: int | None = None,
        reranker: str | None = None,
        vectors=None,
    ) -> list[list[Hit]]:
        """Top-k chunks per query. Hybrid: vector and BM25 rankings fused by reciprocal rank.

        ``vectors``: the queries' embeddings when the caller has them already (benchmarks time the
        index alone this way)."""
        import numpy as np

        from odyssey.models.embeddings import embed

        if mode not in {"hybrid", "vector", "bm25"}:
            raise OdysseyError(f"unknown retrieval mode {mode!r}", hint="use hybrid, vector or bm25")
        table = self.table()
        if table is None or not queries:
            return [[] for _ in queries]
        n = candidates or max(4 * k, 20)
        qvecs = embed(list(queries), self.embedder) if vectors is None else vectors
        columns = ["id", "source", "title", "section", "page", "text", "vector"]
        bm25_ranked: list[list[str]] = [[] for _ in queries]
        if mode in {"hybrid", "bm25"} and self._load_bm25() is not None:
            bm25s = _bm25s()

            tokens = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
            top = min(n, len(self._bm25_ids))
            docs, scores = self._bm25.retrieve(tokens, k=top, show_progress=False)
            for qi in range(len(queries)):
                bm25_ranked[qi] = [self._bm25_ids[d] for d, s in zip(docs[qi], scores[qi]) if s > 0]
        results = []
        for qi, query in enumerate(queries):
            rows: dict[str, dict] = {}
            vec_ranked: list[str] = []
            if mode in {"hybrid", "vector"}:
                # _distance named: without it, lance logs a deprecation warning to the terminal on every query
                nearest = table.search(qvecs[qi]).distance_type("cosine").select([*columns, "_distance"])
                found = nearest.limit(n).to_list()
                for row in found:
                    rows[row["id"]] = row
                    vec_ranked.append(row["id"])
            missing = [i for i in bm25_ranked[qi] if i not in rows]
            if missing:
                ids = ", ".join(f"'{i}'" for i in missing if re.fullmatch(r"[0-9a-f]+", i))
                for row in table.search().where(f"id IN ({ids})").select(columns).limit(len(missing)).to_list():
                    rows[row["id"]] = row
            fused: dict[str, float] = {}
            for ranking in (vec_ranked, bm25_ranked[qi]):
                for rank, cid in enumerate(ranking):
                    fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
            vrank = {c: r + 1 for r, c in enumerate(vec_ranked)}
            brank = {c: r + 1 for r, c in enumerate(bm25_ranked[qi])}
            hits = []
            for cid, score in sorted(fused.items(), key=lambda kv: -kv[1]):
                row = rows[cid]
                sim = float(np.dot(np.asarray(row["vector"], dtype="float32"), qvecs[qi]))
                hits.append(
                    Hit(
                        cid,
                        row["source"],
                        row["title"],
                        row["section"],
                        row["page"] or None,
                        row["text"],
                        score,
                        sim,
                        vrank.get(cid),
                        brank.get(cid),
                    )
                )
            if reranker and hits:
                hits = self._rerank(reranker, query, hits)
            results.append(hits[:k])
        return results

    def _rerank(self, ref: str, query: str, hits: list[Hit]) -> list[Hit]:
        """Re-order candidates with a cross-encoder (sentence-transformers ``CrossEncoder``)."""
        if self._reranker is None or self._reranker[0] != ref:
            from odyssey.errors import require

            st = require("sentence_transformers", "packaged", "re-ranking")
            try:
                self._reranker = (ref, st.CrossEncoder(ref, device="cpu"))
            except Exception as exc:
                raise OdysseyError(
                    f"could not load re-ranker {ref!r}: {type(exc).__name__}: {str(exc)[:200]}",
                    hint="give a local CrossEncoder folder, or unset augment.reranker",
                ) from None
        scores = self._reranker[1].predict([(query, h.text) for h in hits], show_progress_bar=False)
        for hit, s in zip(hits, scores):
            hit.rerank_score = float(s)
        return sorted(hits, key=lambda h: -h.rerank_score)

    def drop(self) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)
        self._table = self._bm25 = None
