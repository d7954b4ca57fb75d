"""Evaluation engines: transformers (the reference) against llama.cpp on the same 100 DialogSum rows.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/eval_engine.py [--workdir /tmp/evalengine]
        [--parts eval,bare,prompt,dialogsum_prompt] [--n 100] [--slots 8]

Parts (results accumulate in benchmarks/results/eval_engine.json after each, so a crash keeps what ran):

* ``eval``: ``odyssey eval`` of packaged SmolLM2-135M-Instruct zero-shot on DialogSum rows 400-499 (the
  last 100 of ../shared/data/dialogsum/dialogsum.dev.jsonl; greedy, max_new_tokens 60), once with
  ``--engine transformers`` and once with ``--engine llamacpp``: tokens/s, identical answers, ROUGE,
  the output checks' warnings.
* ``bare``: the same token-id prompts sent straight to a llama-server on the same GGUF with the same
  slot count, by a plain thread pool: what Odyssey's engine layer costs on top.
* ``prompt``: the prompt search of a fresh ``odyssey init`` project (the shipped example data),
  transformers against llamacpp: wall time.
* ``dialogsum_prompt``: the prompt search on DialogSum (validation = rows 350-399) with llamacpp: which
  variant it keeps, and whether that variant copies the dialogue.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "eval_engine.json"
MODEL = "packaged:smollm2-135m-instruct"

SPEC = """# Engine benchmark on DialogSum (benchmarks/eval_engine.py); not shipped
name: dialogsum-engines
scope:
  task: summarization
  data:
    source: {{train: data/train.jsonl, validation: data/validation.jsonl, test: data/test.jsonl}}
    fields: {{input: dialogue, target: summary, id: fname}}
  metrics: [rouge1, rouge2, rougeL]
  gates: {{rougeL: ">= 0.30"}}
models: [{model}]
prompt: {{shots: [0, 1, 3], selection: [fixed, similar], limit: {val_n}, test_limit: {n}, generation: {{max_new_tokens: 60}}}}
evaluate:
  batch_size: 8
  generation: {{max_new_tokens: 60}}
  llamacpp: {{slots: {slots}}}
"""


def load_results() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {"benchmark": "eval_engine"}


def save(results: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")


def dialogsum_project(workdir: Path, n: int, slots: int, val_n: int = 50):
    from odyssey.project import Project

    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:350]), ("validation", rows[350:400]), ("test", rows[400 : 400 + n])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (workdir / "odyssey.yaml").write_text(SPEC.format(model=MODEL, n=n, slots=slots, val_n=val_n))
    return Project.load(workdir)


def part_eval(project, results: dict) -> None:
    from odyssey.evaluate import evaluate_candidate

    runs = {}
    for engine in ("transformers", "llamacpp"):
        t0 = time.perf_counter()
        res = evaluate_candidate(project, MODEL, "test", engine=engine)
        wall = time.perf_counter() - t0
        rows = project.store.outputs(res.run_id)
        runs[engine] = {
            "metrics": res.metrics,
            "wall_s": wall,
            "notes": res.notes,
            "run_id": res.run_id,
            "answers": {r["example_id"]: r["prediction"] for r in rows},
        }
        print(
            f"{engine}: {res.metrics['tokens_per_s']:.1f} tok/s, rougeL {res.metrics['rougeL']:.4f}, "
            f"copy_rate {res.metrics.get('copy_rate', 0):.2f}, wall {wall:.0f} s",
            flush=True,
        )
    ref, fast = runs["transformers"], runs["llamacpp"]
    same = [k for k in ref["answers"] if ref["answers"][k] == fast["answers"].get(k)]
    results["eval"] = {
        "model": MODEL,
        "rows": "dialogsum.dev.jsonl[400:500]",
        "n": len(ref["answers"]),
        "max_new_tokens": 60,
        "transformers": {k: v for k, v in ref.items() if k != "answers"},
        "llamacpp": {k: v for k, v in fast.items() if k != "answers"},
        "differing_examples": [
            {"id": k, "transformers": ref["answers"][k], "llamacpp": fast["answers"].get(k)}
            for k in ref["answers"]
            if k not in same
        ][:5],
    }
    results["speedup"] = fast["metrics"]["tokens_per_s"] / ref["metrics"]["tokens_per_s"]
    results["speedup_wall"] = ref["wall_s"] / fast["wall_s"]
    results["identical_outputs"] = len(same) / len(ref["answers"])
    results["rougeL_delta"] = fast["metrics"]["rougeL"] - ref["metrics"]["rougeL"]
    results["zero_shot_output_checks"] = [n for n in ref["notes"] if "copy" in n or "stopped" in n]


def _prompts(project, engine) -> tuple[list[str], list[list[int]]]:
    """The zero-shot test prompts as the harness renders them, and the token ids the engine sends."""
    from odyssey.engines.base import encode_prompt
    from odyssey.evaluate import _render_all, candidate_setup

    _, _, cfg, _ = candidate_setup(project, MODEL, None)
    examples = project.dataset().split("test")
    rendered, _ = _render_all(engine, examples, cfg, [], {"max_new_tokens": 60, **cfg.generation})
    texts = [r.text for r in rendered]
    return texts, [encode_prompt(engine.tokenizer, engine.family, t) for t in texts]


def _drive_bare(base_url: str, headers: dict, prompts: list[list[int]], slots: int) -> dict:
    """A plain client: one thread per slot, token ids in, the server's token count out."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    body = {"n_predict": 60, "temperature": 0.0, "top_k": 1, "cache_prompt": True, "min_p": 0.0}
    with httpx.Client(base_url=base_url, headers=headers, timeout=3600) as client:

        def one(ids):
            return client.post("/completion", json={**body, "prompt": ids}).json()["tokens_predicted"]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(slots) as pool:
            tokens = sum(pool.map(one, sorted(prompts, key=len, reverse=True)))
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "new_tokens": tokens, "tokens_per_s": tokens / wall}


def _odyssey_run(project, warm: list[int]) -> tuple[dict, object, list[list[int]]]:
    from odyssey.engines import open_engine

    with open_engine(MODEL, root=project.root, evaluate=project.spec.evaluate, engine="llamacpp") as engine:
        texts, ids = _prompts(project, engine)
        engine._one(warm, {"max_new_tokens": 4})  # the same warm-up the bare server gets
        _, stats = engine.generate(texts, {"max_new_tokens": 60}, description="odyssey engine")
        return (
            {
                "wall_s": stats["wall_s"],
                "new_tokens": stats["new_tokens"],
                "tokens_per_s": stats["new_tokens"] / stats["wall_s"],
            },
            engine.gguf,
            ids,
        )


def _bare_run(gguf, ids: list[list[int]], slots: int, warm: list[int]) -> dict:
    from odyssey.engines.llamacpp import server_binary, server_command
    from odyssey.engines.process import ManagedServer

    binary, threads = server_binary(), os.cpu_count()

    def cmd(port: int, key: str) -> list[str]:
        return server_command(binary, gguf, port, key, slots=slots, context=slots * 4096, threads=threads)

    with ManagedServer(cmd, name="bare llama-server") as bare:
        import httpx

        httpx.post(
            bare.base_url + "/completion",
            headers=bare.headers,
            timeout=600,
            json={"prompt": warm, "n_predict": 4, "temperature": 0.0},
        )
        return _drive_bare(bare.base_url, bare.headers, ids, slots)


def part_bare(project, results: dict, slots: int, rounds: int = 2) -> None:
    """Odyssey's engine (``generate`` on the rendered text: tokenizing, requests, decoding, stop-string
    checks) against bare llama-server driven by a plain thread pool, on the same GGUF, slots and token
    ids. Each server answers one short warm-up request first (page-cache and buffer effects hit the
    first server otherwise), and the order alternates between rounds."""
    warm = list(range(10, 42))
    samples, gguf, ids = [], None, None
    for r in range(rounds):
        if r % 2 == 0:
            ody, gguf, ids = _odyssey_run(project, warm)
            raw = _bare_run(gguf, ids, slots, warm)
        else:
            raw = _bare_run(gguf, ids, slots, warm)
            ody, _, _ = _odyssey_run(project, warm)
        samples.append(
            {
                "order": "odyssey first" if r % 2 == 0 else "bare first",
                "odyssey": ody,
                "bare": raw,
                "ratio": ody["tokens_per_s"] / raw["tokens_per_s"],
            }
        )
        print(f"odyssey {ody['tokens_per_s']:.1f} tok/s vs bare {raw['tokens_per_s']:.1f} tok/s", flush=True)
    results["bare"] = {"slots": slots, "samples": samples}
    results["overhead_vs_bare_server"] = 1 - sum(s["ratio"] for s in samples) / len(samples)


def part_prompt(workdir: Path, results: dict) -> None:
    from odyssey.adapt.prompting import prompt_search
    from odyssey.project import Project
    from odyssey.scaffold import init_project

    times = {}
    for engine in ("transformers", "llamacpp"):
        root = workdir / f"init-{engine}"
        if not (root / "odyssey.yaml").exists():
            init_project(root, "summarization")
        t0 = time.perf_counter()
        res = prompt_search(Project.load(root), engine=engine)
        times[engine] = {
            "wall_s": time.perf_counter() - t0,
            "best": res.best.name,
            "test": {k: res.test_metrics.get(k) for k in ("rougeL", "copy_rate", "tokens_per_s")},
        }
        print(f"prompt search ({engine}): {times[engine]['wall_s']:.0f} s, best {res.best.name}", flush=True)
    results["prompt_search"] = times
    results["prompt_search_speedup"] = times["transformers"]["wall_s"] / times["llamacpp"]["wall_s"]


def part_eval_f16(project, results: dict) -> None:
    """The same evaluation with the GGUF at f16 (evaluate.llamacpp.precision): half the bytes per
    token, faster prompt processing on this CPU, at some cost in agreement with the fp32 reference."""
    from odyssey.evaluate import evaluate_candidate

    spec = project.spec.model_copy(deep=True)
    spec.evaluate.llamacpp.precision = "f16"
    project.spec = spec
    res = evaluate_candidate(project, MODEL, "test", engine="llamacpp")
    rows = {r["example_id"]: r["prediction"] for r in project.store.outputs(res.run_id)}
    ref = results["eval"]
    ref_rows = {r["example_id"]: r["prediction"] for r in project.store.outputs(ref["transformers"]["run_id"])}
    same = sum(1 for k, v in ref_rows.items() if rows.get(k) == v)
    results["eval_f16"] = {
        "metrics": res.metrics,
        "identical_outputs": same / len(ref_rows),
        "rougeL_delta": res.metrics["rougeL"] - ref["transformers"]["metrics"]["rougeL"],
        "speedup": res.metrics["tokens_per_s"] / ref["transformers"]["metrics"]["tokens_per_s"],
    }
    print(f"f16: {res.metrics['tokens_per_s']:.1f} tok/s, identical {same / len(ref_rows):.2f}", flush=True)


def part_dialogsum_prompt(project, results: dict, limit: int = 20) -> None:
    from odyssey.adapt.prompting import prompt_search

    res = prompt_search(project, engine="llamacpp", limit=limit, test_limit=limit)
    results["dialogsum_prompt_search"] = {
        "validation_rows": f"dialogsum.dev.jsonl[350:{350 + limit}]",
        "test_rows": f"[400:{400 + limit}]",
        "best": res.best.name,
        "variants": {
            v.name: {
                "rougeL": v.metrics.get("rougeL"),
                "copy_rate": v.metrics.get("copy_rate"),
                "copies_input": v.copies_input,
            }
            for v in res.variants
        },
        "best_copies_input": res.best.copies_input,
        "test": {k: res.test_metrics.get(k) for k in ("rouge1", "rougeL", "copy_rate")},
    }
    print(f"DialogSum prompt search keeps {res.best.name} (copies input: {res.best.copies_input})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/odyssey-eval-engine"))
    ap.add_argument("--parts", default="eval,bare,prompt,dialogsum_prompt")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--slots", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = load_results()
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    results["settings"] = {"n": args.n, "slots": args.slots, "model": MODEL, "greedy": True, "max_new_tokens": 60}
    project = dialogsum_project(args.workdir / "dialogsum", args.n, args.slots)
    parts = args.parts.split(",")
    for part in parts:
        t0 = time.perf_counter()
        if part == "eval":
            part_eval(project, results)
        elif part == "bare":
            part_bare(project, results, args.slots)
        elif part == "prompt":
            part_prompt(args.workdir, results)
        elif part == "dialogsum_prompt":
            part_dialogsum_prompt(project, results)
        elif part == "eval_f16":
            part_eval_f16(project, results)
        results.setdefault("part_wall_s", {})[part] = time.perf_counter() - t0
        results["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        save(results)
    summary = {
        k: results.get(k)
        for k in ("speedup", "identical_outputs", "rougeL_delta", "overhead_vs_bare_server", "prompt_search_speedup")
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
