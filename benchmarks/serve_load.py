"""Serving under load: Odyssey's gateway vs llama.cpp's C++ llama-server vs llama-cpp-python's server.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/serve_load.py            # full run
    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/serve_load.py --quick    # smoke run

One run, same machine, same GGUF (the packaged SmolLM2-135M-Instruct Q4_1), same prompts (the
shipped example dialogues with the summarization instruction, as chat messages), same
``max_tokens`` and greedy decoding, non-streaming requests at concurrency 1, 8 and 32. The
servers run one at a time so they never compete for the cores:

* ``llama-server``: llama.cpp's C++ server, ``-np P`` parallel slots, continuous batching;
* ``llama_cpp.server``: ``python -m llama_cpp.server`` from llama-cpp-python (one request at a time);
* ``odyssey``: ``odyssey serve`` with the llama.cpp backend (the same llama-server binary as a
  child with ``-np P``) behind the gateway, with key auth, limits and capture on.

Aggregate tokens/s = completion tokens of all requests / wall time of the level; p50/p95 are
per-request latencies. After the load, every Odyssey answer's request id is looked up in the
store: ``lost_records`` counts answers with no record. ``--rounds N`` repeats the llama-server /
odyssey pair N times (fresh processes each time) and reports the median ratio; each level also
records the CPU seconds of the server process and of its children (for Odyssey: gateway vs its
llama-server), since on a small machine the gateway's CPU is taken from decoding.
Results: benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from odyssey.deploy.backends import free_port, llama_server_path  # noqa: E402
from odyssey.evaluate import percentile  # noqa: E402
from odyssey.models.refs import PACKAGED  # noqa: E402

INSTRUCTION = "Summarize the following dialogue in one or two sentences."


def prompts(n: int, start: int = 0) -> list[list[dict]]:
    """``n`` chat requests from dialogue ``start`` on. Each level gets dialogues no earlier level sent:
    llama-server keeps every slot's last prompt and reuses the longest matching prefix, so a repeated
    prompt would skip its prefill and flatter whichever level came later."""
    rows = [
        json.loads(line)
        for line in (REPO / "odyssey/data/examples/summarization/dialogues.jsonl").read_text().splitlines()
        if line.strip()
    ]
    msgs = [[{"role": "user", "content": f"{INSTRUCTION}\n\nDialogue:\n{r['dialogue']}"}] for r in rows]
    return [msgs[(start + i) % len(msgs)] for i in range(n)]


def wait_ready(url: str, proc: subprocess.Popen, path: str, timeout: float = 600, headers=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} while starting")
        try:
            if httpx.get(url + path, timeout=2, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready in {timeout} s")


def serve_project(folder: Path, slots: int, context: int, key_name: str) -> tuple[Path, str]:
    """An example project whose ``odyssey serve`` runs llama.cpp with ``slots`` slots and no limit a load
    test would hit; returns its root and a fresh API key."""
    from odyssey.deploy.keys import create_key
    from odyssey.project import Project
    from odyssey.scaffold import init_project

    root = init_project(folder, "summarization")
    spec = (root / "odyssey.yaml").read_text()
    spec += (
        f"\ndeploy:\n  backend: llama.cpp\n  parallel: {slots}\n  context_length: {context}\n"
        "  prompt_mode: chat\n  max_concurrency: 256\n  rate_limit_rpm: 1000000\n"
    )
    (root / "odyssey.yaml").write_text(spec)
    project = Project.load(root)
    key = create_key(project.store, key_name).key
    project.store.close()
    return root, key


def stop(proc: subprocess.Popen):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def load(
    url: str, headers: dict, model: str, messages: list[list[dict]], concurrency: int, max_tokens: int
) -> dict:
    queue: asyncio.Queue = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)
    latencies, tokens, prompt_tokens, ids, errors = [], [], [], [], []

    async def worker(client: httpx.AsyncClient):
        while not queue.empty():
            m = queue.get_nowait()
            body = {"model": model, "messages": m, "max_tokens": max_tokens, "temperature": 0}
            t0 = time.perf_counter()
            r = await client.post(url + "/v1/chat/completions", json=body, headers=headers)
            if r.status_code != 200:
                errors.append(f"{r.status_code}: {r.text[:200]}")
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            data = r.json()
            tokens.append(data["usage"]["completion_tokens"])
            prompt_tokens.append(data["usage"].get("prompt_tokens") or 0)
            ids.append(data.get("id"))

    async with httpx.AsyncClient(timeout=httpx.Timeout(1800), limits=httpx.Limits(max_connections=64)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": len(messages),
        "ok": len(latencies),
        "errors": errors[:3],
        "completion_tokens": sum(tokens),
        "wall_s": round(wall, 2),
        "tokens_per_s": round(sum(tokens) / wall, 2),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "mean_completion_tokens": round(sum(tokens) / max(len(tokens), 1), 1),
        "mean_prompt_tokens": round(sum(prompt_tokens) / max(len(prompt_tokens), 1), 1),
        "_ids": ids,
    }


def cpu_seconds(proc: subprocess.Popen) -> tuple[float, float]:
    """CPU time (user + system) of the server process itself and of its child processes."""
    import psutil

    p = psutil.Process(proc.pid)
    own = sum(p.cpu_times()[:2])
    kids = 0.0
    for child in p.children(recursive=True):
        try:
            kids += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return own, kids


def run_levels(name, url, headers, model, levels, per_level, max_tokens, proc=None) -> dict:
    asyncio.run(load(url, headers, model, prompts(2, start=-2), 2, max_tokens))  # warm-up: the last two dialogues
    out, start = {}, 0
    for c, n in zip(levels, per_level):
        before = cpu_seconds(proc) if proc is not None else None
        res = asyncio.run(load(url, headers, model, prompts(n, start), c, max_tokens))
        if before is not None:
            # Where the cores went: on 2 cores every CPU-second the gateway spends is taken from decoding.
            after = cpu_seconds(proc)
            res["cpu_s_server"] = round(after[0] - before[0], 2)
            res["cpu_s_children"] = round(after[1] - before[1], 2)
        start += n
        print(
            f"  {name:18s} c={c:<3d} {res['tokens_per_s']:7.2f} tok/s  p50 {res['p50_ms']:8.0f} ms  "
            f"p95 {res['p95_ms']:8.0f} ms  ({res['ok']}/{res['requests']} ok, {res['completion_tokens']} tokens)"
            + (f"  cpu {res['cpu_s_server']:.1f}+{res['cpu_s_children']:.1f} s" if "cpu_s_server" in res else ""),
            flush=True,
        )
        out[str(c)] = res
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--requests", default="3,16,32", help="requests per level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=32, help="llama-server slots (-np), for both C++ servers")
    ap.add_argument("--slot-context", type=int, default=1024)
    ap.add_argument("--servers", default="llama-server,odyssey,llama_cpp.server")
    ap.add_argument("--rounds", type=int, default=1, help="repeat llama-server and odyssey this many times")
    ap.add_argument("--quick", action="store_true", help="levels 1,8 with few requests")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/serve_load.json"))
    args = ap.parse_args()
    if args.quick:
        args.levels, args.requests = "1,8", "2,8"
    levels = [int(x) for x in args.levels.split(",")]
    per_level = [int(x) for x in args.requests.split(",")]
    gguf = PACKAGED["smollm2-135m-instruct"].weights_file()
    binary = llama_server_path()
    if binary is None:
        sys.exit(
            'llama-server is not built: python -c "from odyssey.models import llamacpp as l; '
            "l.tool_path('llama-server')\" (or set ODYSSEY_LLAMA_SERVER)"
        )
    threads = os.cpu_count() or 2
    total_ctx = args.parallel * args.slot_context
    servers = args.servers.split(",")
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    extra: dict = {}

    lost_total = answered_total = 0

    def one_round(rnd: int) -> dict:
        nonlocal lost_total, answered_total
        results: dict = {}
        if "llama-server" in servers:
            port = free_port()
            proc = subprocess.Popen(
                [
                    str(binary),
                    "-m",
                    str(gguf),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "-np",
                    str(args.parallel),
                    "-c",
                    str(total_ctx),
                    "-t",
                    str(threads),
                    "--cont-batching",
                    "--no-webui",
                ],
                stdout=open(work / "llama-server.log", "wb"),
                stderr=subprocess.STDOUT,
            )
            try:
                wait_ready(f"http://127.0.0.1:{port}", proc, "/health")
                print(f"llama-server -np {args.parallel}", flush=True)
                results["llama-server"] = run_levels(
                    "llama-server", f"http://127.0.0.1:{port}", {}, "smollm2", levels, per_level, args.max_tokens, proc
                )
            finally:
                stop(proc)

        if "odyssey" in servers:
            from odyssey.project import Project

            root, key = serve_project(work / f"proj{rnd}", args.parallel, total_ctx, "bench")
            port = free_port()
            env = {**os.environ, "ODYSSEY_QUIET": "1"}
            if binary is not None:
                env["ODYSSEY_LLAMA_SERVER"] = str(binary)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "odyssey.cli",
                    "serve",
                    "-p",
                    str(root),
                    "--port",
                    str(port),
                    "--backend",
                    "llama.cpp",
                ],
                stdout=open(work / "odyssey.log", "wb"),
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
            headers = {"Authorization": f"Bearer {key}"}
            try:
                wait_ready(f"http://127.0.0.1:{port}", proc, "/v1/models", headers=headers)
                print(f"odyssey serve (llama.cpp backend, -np {args.parallel}, auth + capture on)", flush=True)
                res = run_levels(
                    "odyssey", f"http://127.0.0.1:{port}", headers, None, levels, per_level, args.max_tokens, proc
                )
                results["odyssey"] = res
            finally:
                stop(proc)
            from odyssey.store import deploy as sd

            project = Project.load(root)
            captured = {r["request_id"] for r in sd.requests(project.store) if r["status"] == 200}
            answered = [i for level in res.values() for i in level["_ids"]]
            answered_total += len(answered)
            lost_total += sum(1 for i in answered if i not in captured)
            print(f"  capture: {len(answered)} answered (after warm-up), {lost_total} without a record", flush=True)

        return results

    # Rounds alternate the two llama-server setups (each restarted fresh) so that a slow minute of the
    # shared machine lands on both; the ratios reported are the median over rounds.
    rounds = [one_round(r) for r in range(args.rounds)]
    results = rounds[0]
    extra["odyssey_answered"] = answered_total
    extra["lost_records"] = lost_total

    if "llama_cpp.server" in servers:
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
                "--n_threads",
                str(threads),
            ],
            stdout=open(work / "llama_cpp_server.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc, "/v1/models")
            print("python -m llama_cpp.server", flush=True)
            results["llama_cpp.server"] = run_levels(
                "llama_cpp.server", f"http://127.0.0.1:{port}", {}, "smollm2", levels, per_level, args.max_tokens
            )
        finally:
            stop(proc)

    for res in results.values():
        for level in res.values():
            level.pop("_ids", None)
    out = {
        "benchmark": "serve_load",
        "model": f"packaged:smollm2-135m-instruct ({gguf.name})",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {
            "levels": levels,
            "requests": per_level,
            "max_tokens": args.max_tokens,
            "greedy": True,
            "parallel_slots": args.parallel,
            "slot_context": args.slot_context,
            "threads": threads,
        },
        "results": results,
        **extra,
    }
    import statistics

    for rnd in rounds[1:]:
        for res in rnd.values():
            for level in res.values():
                level.pop("_ids", None)
    if len(rounds) > 1:
        out["rounds"] = rounds[1:]
    for c in levels:
        tok = {name: r[str(c)]["tokens_per_s"] for name, r in results.items()}
        per_round = [
            r["odyssey"][str(c)]["tokens_per_s"] / r["llama-server"][str(c)]["tokens_per_s"]
            for r in rounds
            if "odyssey" in r and "llama-server" in r
        ]
        if per_round:
            out[f"ratio_vs_llama_server_c{c}"] = round(statistics.median(per_round), 3)
            out[f"ratio_vs_llama_server_c{c}_rounds"] = [round(x, 3) for x in per_round]
        if "odyssey" in tok and "llama_cpp.server" in tok:
            out[f"ratio_vs_llama_cpp_python_c{c}"] = round(tok["odyssey"] / tok["llama_cpp.server"], 3)
    print(json.dumps({k: v for k, v in out.items() if k.startswith(("ratio", "lost"))}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
