"""Curation benchmark: recall and precision of duplicate removal on a corpus with injected duplicates.

Base corpus: docstrings of the Python standard library (real, varied English prose; used here at run time,
never shipped), at least 40 words each, with documents that already resemble another one (exact word-3-gram Jaccard
>= 0.3) left out, so the only duplicates are the injected ones. Injected: exact copies (some with
changed case and spacing) and near copies with ~5 % of the words substituted, deleted or inserted.
recall = injected duplicates removed / injected; precision = injected among everything removed as a
duplicate (exact or near). Writes benchmarks/results/select_curation.json.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/select_curation.py
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def stdlib_docs(min_words: int = 40, limit: int = 2000) -> list[str]:
    seen, docs = set(), []
    names = sorted(
        m.name
        for m in pkgutil.iter_modules()
        if m.module_finder
        and "python3" in str(getattr(m.module_finder, "path", ""))
        and "site-packages" not in str(getattr(m.module_finder, "path", ""))
    )
    for name in names:
        if name.startswith(("_", "test", "idlelib", "tkinter", "turtle", "antigravity", "this")):
            continue
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj) if (inspect.isfunction(obj) or inspect.isclass(obj)) else None
            if doc and len(doc.split()) >= min_words:
                key = " ".join(doc.lower().split())
                if key not in seen:
                    seen.add(key)
                    docs.append(doc)
        if len(docs) >= limit:
            break
    return docs[:limit]


def distinct(docs: list[str], max_jaccard: float = 0.3) -> list[str]:
    """Drop base documents that already resemble another (exact word-3-gram Jaccard, all pairs): the
    standard library repeats some docstrings with small changes, and those are not injected duplicates."""
    from odyssey.select.curation import shingles

    kept, sets = [], []
    for doc in docs:
        s = shingles(doc, 3)
        if all(len(s & t) / len(s | t) < max_jaccard for t in sets):
            kept.append(doc)
            sets.append(s)
    return kept


def perturb(text: str, rng: random.Random, rate: float) -> str:
    words = text.split()
    vocabulary = ["data", "value", "object", "returns", "string", "list", "the", "file", "given", "new"]
    for _ in range(max(1, int(len(words) * rate))):
        op, i = rng.randrange(3), rng.randrange(len(words))
        if op == 0:
            words[i] = rng.choice(vocabulary)
        elif op == 1 and len(words) > 5:
            del words[i]
        else:
            words.insert(i, rng.choice(vocabulary))
    return " ".join(words)


def main(n_exact: int = 100, n_near: int = 100, rate: float = 0.05, write: bool = True, **overrides) -> dict:
    from odyssey.select.curation import curate
    from odyssey.spec import CurateSpec

    rng = random.Random(0)
    base = distinct(stdlib_docs())
    records = [{"id": f"base-{i}", "text": t} for i, t in enumerate(base)]
    injected = {}
    for j in range(n_exact):
        src = rng.randrange(len(base))
        text = base[src] if j % 2 else "  " + base[src].upper().replace(" ", "  ")
        injected[f"exact-{j}"] = f"base-{src}"
        records.append({"id": f"exact-{j}", "text": text})
    for j in range(n_near):
        src = rng.randrange(len(base))
        injected[f"near-{j}"] = f"base-{src}"
        records.append({"id": f"near-{j}", "text": perturb(base[src], rng, rate)})
    rng.shuffle(records)
    # Originals first would make "which copy is the duplicate" unambiguous; shuffled, an injected copy may
    # come before its source, so a removal counts as correct when it removes either one of the pair.
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        (corpus / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
        cfg = CurateSpec(
            min_words=5,
            languages=[],
            max_symbol_ratio=1.0,
            min_alpha_ratio=0.0,
            max_repeated_line_ratio=1.0,
            max_top_ngram_ratio=1.0,
            **overrides,
        )  # dedup only
        start = time.perf_counter()
        report = curate(corpus, Path(tmp) / "clean", cfg)
        wall = time.perf_counter() - start
    removed = set(report.dropped_ids.get("exact_duplicate", [])) | set(report.dropped_ids.get("near_duplicate", []))
    pairs = {(k, v) for k, v in injected.items()}
    caught, true_removals = 0, 0
    for copy, source in pairs:
        if copy in removed or (source in removed and report.duplicate_of.get(source) == copy):
            caught += 1
    for doc in removed:
        partner = report.duplicate_of.get(doc)
        if doc in injected or injected.get(partner) == doc or (partner in injected) or injected.get(doc) == partner:
            true_removals += 1
    n_injected = len(pairs)
    result = {
        "base_documents": len(base),
        "injected_exact": n_exact,
        "injected_near": n_near,
        "near_edit_rate": rate,
        "threshold": cfg.near_dup_threshold,
        "num_perm": cfg.num_perm,
        "shingle": cfg.shingle,
        "removed_exact": report.dropped["exact_duplicate"],
        "removed_near": report.dropped["near_duplicate"],
        "recall": caught / n_injected,
        "recall_near": sum(
            1 for c, src in pairs if c.startswith("near-") and (c in removed or report.duplicate_of.get(src) == c)
        )
        / max(n_near, 1),
        "precision": true_removals / max(len(removed), 1),
        "false_removals": sorted(
            d
            for d in removed
            if d.startswith("base-") and d not in injected.values() and report.duplicate_of.get(d) not in injected
        )[:20],
        "wall_s": round(wall, 2),
    }
    if write:
        out = ROOT / "benchmarks" / "results" / "select_curation.json"
        out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
    for edit_rate in (0.10, 0.20):  # harder near copies: how recall falls as copies drift further
        r = main(write=False, rate=edit_rate)
        print(
            f"edit rate {edit_rate}: recall {r['recall']:.3f} (near {r['recall_near']:.3f}), precision {r['precision']:.3f}"
        )
