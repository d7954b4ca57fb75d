"""Augment benchmark: retrieval at scale, and accuracy with and without each technique.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/augment.py [--parts retrieval,qa,math,sc] [--limit N]

retrieval: collections of 1k and 10k chunks (the 29 chunks of the shipped grounded-QA documents
           plus procedurally generated distractors about other shops, products and policies);
           recall@5 of the gold document for the 36 answerable questions, and query latency p50/p95
           (embed + vector search + BM25 + fusion, one query at a time) for hybrid and vector modes.
qa:        grounded-QA accuracy closed-book vs RAG, "not in the documents" rate on unanswerable ones.
math:      arithmetic accuracy plain vs zero-shot CoT vs few-shot CoT vs PAL vs ReAct.
sc:        self-consistency (5 sampled CoT chains, majority vote) on the arithmetic set.

Model: packaged SmolLM2-135M-Instruct (``--model`` to change). Results are merged into
benchmarks/results/augment.json part by part, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ODYSSEY_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "augment.json"

SHOPS = [
    "Ridgeway Gear",
    "Alder & Finch",
    "Bluecrest Sports",
    "Northgate Camping",
    "Pinefield Supply",
    "Skerry Outdoor",
    "Marlow Trails",
    "Veldt Outfit Co.",
    "Harbour Peak",
    "Tamsin Mountain",
]
PRODUCTS = [
    "tent",
    "backpack",
    "sleeping bag",
    "stove",
    "rain jacket",
    "trekking pole",
    "headlamp",
    "water filter",
    "camp chair",
    "hiking boot",
    "fleece",
    "kayak paddle",
    "bike pannier",
    "down vest",
    "sleeping mat",
]
TOPICS = [
    "{shop} accepts returns of unworn {product}s within {n} days; refunds reach the card after {m} working days.",
    "The {shop} {name} {product} weighs {w} kg, costs {p} euros and comes in {c1} and {c2}.",
    "Staff at {shop} get {n} days of annual leave and a discount of {m} percent on every {product}.",
    "{shop} ships each {product} within {m} days; standard delivery costs {p} euros and express delivery is {n} euros.",
    "The repair service of {shop} fixes a {product} in {n} days and charges {p} euros for a new zip.",
    "Customer support at {shop} is open from {h1}:00 to {h2}:00 and answers e-mails within {n} hours.",
    "The {name} {product} by {shop} has a warranty of {m} years against defects in materials and workmanship.",
    "Members of the {shop} club earn {n} points per euro and trade {m}00 points for a voucher.",
    "{shop} opened a new store in {city} with {n} square metres of floor space and a {product} workshop.",
    "To care for the {name} {product}, wash it at {m}0 degrees and dry it away from direct heat.",
]
NAMES = [
    "Ember",
    "Summit",
    "Tundra",
    "Vista",
    "Cirrus",
    "Granite",
    "Juniper",
    "Osprey",
    "Lark",
    "Fjord",
    "Sable",
    "Quill",
]
COLOURS = ["red", "slate", "ochre", "navy", "teal", "black", "olive", "plum"]
CITIES = ["Lyon", "Ghent", "Turin", "Kraków", "Bergen", "Porto", "Leeds", "Malmö", "Linz", "Riga"]


def distractors(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(3, 6)):
            sentences.append(
                rng.choice(TOPICS).format(
                    shop=rng.choice(SHOPS),
                    product=rng.choice(PRODUCTS),
                    name=rng.choice(NAMES),
                    n=rng.randint(2, 90),
                    m=rng.randint(2, 9),
                    w=round(rng.uniform(0.2, 4), 2),
                    p=round(rng.uniform(3, 400), 2),
                    c1=rng.choice(COLOURS),
                    c2=rng.choice(COLOURS),
                    h1=rng.randint(6, 10),
                    h2=rng.randint(16, 21),
                    city=rng.choice(CITIES),
                )
            )
        out.append(" ".join(sentences))
    return out


def merge(part: str, data: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current[part] = data
    current["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    current["machine"] = f"{os.cpu_count()} CPU cores (shared), torch CPU"
    RESULTS.write_text(json.dumps(current, indent=2))


def bench_retrieval(sizes=(1000, 10000)) -> dict:
    from odyssey.augment.documents import Chunk
    from odyssey.augment.evaluate import grounded_docs_dir, grounded_questions
    from odyssey.augment.index import Collection
    from odyssey.evaluate import percentile
    from odyssey.models.embeddings import embed

    questions = [q for q in grounded_questions() if q["answerable"]]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            coll = Collection(Path(tmp) / f"c{size}", f"c{size}", embedder="packaged:all-minilm-l6-v2")
            coll.ingest([grounded_docs_dir()], base=grounded_docs_dir())
            real = coll.count()
            texts = distractors(size - real, seed=size)
            t0 = time.perf_counter()
            coll.add_chunks(
                [
                    Chunk(f"{i:024x}", f"distractor/{i // 10}.txt", "Other shops", "", None, i % 10, t)
                    for i, t in enumerate(texts)
                ]
            )
            build_s = time.perf_counter() - t0
            row = {"chunks": coll.count(), "real_chunks": real, "build_s_embed_and_index": round(build_s, 1)}
            coll.search("warm up", k=5)  # first query loads the BM25 index and compiles paths
            vectors = embed([q["question"] for q in questions])
            for mode in ("hybrid", "vector", "bm25"):
                latencies, index_latencies, found, first = [], [], [], []
                for i, q in enumerate(questions):
                    t0 = time.perf_counter()
                    hits = coll.search(q["question"], k=5, mode=mode)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    coll.search_many([q["question"]], k=5, mode=mode, vectors=vectors[i : i + 1])
                    index_latencies.append((time.perf_counter() - t0) * 1000)
                    found.append(any(h.source == q["source"] for h in hits))
                    first.append(bool(hits) and hits[0].source == q["source"])
                row[mode] = {
                    "recall@5": round(statistics.fmean(found), 3),
                    "recall@1": round(statistics.fmean(first), 3),
                    "p50_ms": round(percentile(latencies, 50), 1),
                    "p95_ms": round(percentile(latencies, 95), 1),
                    "index_only_p50_ms": round(percentile(index_latencies, 50), 1),
                }
                print(f"retrieval {size:>6} chunks {mode:>6}: {row[mode]}", flush=True)
            out[str(size)] = row
    return out


def bench_generation(parts: list[str], model: str, limit: int | None, qa_limit: int | None = None) -> None:
    from odyssey.augment.evaluate import evaluate_augmented
    from odyssey.augment.llm import ChatModel
    from odyssey.project import Project
    from odyssey.scaffold import init_project

    root = Path(tempfile.mkdtemp(prefix="odyssey-augment-bench-")) / "proj"
    init_project(root, "qa")
    project = Project.load(root)
    t0 = time.perf_counter()
    chat = ChatModel.load(model, project.root, max_new_tokens=project.spec.augment.max_new_tokens, batch_size=8)
    print(f"loaded {model} in {time.perf_counter() - t0:.0f} s", flush=True)
    plan = []
    if "qa" in parts:
        plan += [("grounded-qa", "plain"), ("grounded-qa", "rag")]
    if "math" in parts:
        plan += [("arithmetic", t) for t in ("plain", "pal", "cot", "cot-fewshot", "react")]
    results = json.loads(RESULTS.read_text()).get("generation", {}) if RESULTS.exists() else {}
    for dataset, technique in plan:
        t0 = time.perf_counter()
        r = evaluate_augmented(
            project, technique, dataset, model_obj=chat, limit=qa_limit if dataset == "grounded-qa" else limit
        )
        entry = {
            "n": r.n,
            "seconds": round(time.perf_counter() - t0, 1),
            **{k: round(v, 4) for k, v in r.metrics.items()},
        }
        results[f"{dataset}/{technique}"] = entry
        print(f"{dataset:>12} {technique:>12}: {entry}", flush=True)
        merge("generation", {"model": model, **results})
    if "sc" in parts:
        project.spec.augment.self_consistency = 5
        t0 = time.perf_counter()
        r = evaluate_augmented(project, "cot", "arithmetic", model_obj=chat, limit=limit)
        entry = {
            "n": r.n,
            "samples": 5,
            "seconds": round(time.perf_counter() - t0, 1),
            **{k: round(v, 4) for k, v in r.metrics.items()},
        }
        results["arithmetic/cot-self-consistency-5"] = entry
        print(f"arithmetic cot-sc5: {entry}", flush=True)
        merge("generation", {"model": model, **results})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="retrieval,qa,math", help="comma-separated: retrieval, qa, math, sc")
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=None, help="arithmetic problems (default: all 40)")
    parser.add_argument("--qa-limit", type=int, default=None, help="grounded-QA questions (default: all 48)")
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if set(parts) & {"qa", "math", "sc"}:
        bench_generation(parts, args.model, args.limit, args.qa_limit)
    if "retrieval" in parts:
        merge("retrieval", bench_retrieval(tuple(int(s) for s in args.sizes.split(","))))
    print(json.dumps(json.loads(RESULTS.read_text()), indent=2))


if __name__ == "__main__":
    main()
