"""Soak: ``odyssey serve`` under a long mixed load, then kill -9 under load, against bare llama-server.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/serve_soak.py            # 10,000 requests @32
    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/serve_soak.py --requests 300 --bare-requests 100

One run, one machine, the packaged SmolLM2-135M-Instruct GGUF, ``--slots`` parallel llama.cpp slots:

1. **bare llama-server** (the same binary and argument list Odyssey uses, ``engines.llamacpp.server_command``)
   answers ``--bare-requests`` plain chat requests at ``--concurrency``: the throughput to match.
2. **odyssey serve** with keys, rate/size limits and capture on answers ``--requests`` requests at the same
   concurrency, mixed like a real client population: 85 % chat, 5 % streaming chat, 5 % feedback (thumbs on
   an earlier answer), 5 % malformed (bad JSON, a missing field, a lone surrogate, no key, a wrong key, an
   oversized ``n``). The load stops at ``--time-limit`` if it is not done (the JSON says so).
   Reported: counts by kind and status, p50/p95/p99 latency of chat, aggregate completion tokens/s, the
   server's resident memory (gateway + llama-server child) at start and end, and the store's records against
   the 200 responses (``lost_records``, ``lost_feedback``).
3. **kill -9 under load**: a fresh ``odyssey serve`` on the same store takes chat load; after ``--kill-after``
   seconds the gateway gets SIGKILL. Then: every answer a client received is in the store
   (``kill9_lost_records``), ``PRAGMA integrity_check`` is ok (``kill9_integrity``), no llama-server child
   outlives its parent (``kill9_orphans``), and a restart on the same port and store answers at once
   (``kill9_restart_s``).

Prompts are short (a fixed instruction and a varying sentence) and ``--max-tokens`` small, so 10,000 requests
fit in minutes on 2 cores: this measures the server, its capture and its limits, not prefill.
Results: benchmarks/results/serve_soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from serve_load import serve_project, stop, wait_ready  # noqa: E402

from odyssey.deploy.backends import free_port  # noqa: E402
from odyssey.evaluate import percentile  # noqa: E402
from odyssey.models.refs import PACKAGED  # noqa: E402

SYSTEM = "You are a helpful assistant. Answer in a few words."
TOPICS = ["the weather", "a train", "lunch", "a meeting", "the park", "a book", "music", "a phone call", "coffee"]


def chat_messages(i: int) -> list[dict]:
    """A short, varied chat: llama-server's prompt cache keeps the shared system prefix, as in a real app."""
    topic = TOPICS[i % len(TOPICS)]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Say something about {topic} ({i})."}]


def request_plan(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    kinds = ["chat"] * 17 + ["stream", "feedback", "malformed"]
    return [rng.choice(kinds) for _ in range(n)]


MALFORMED = [
    ("bad_json", lambda h: {"content": b'{"messages": [', "headers": {**h, "content-type": "application/json"}}),
    ("missing_messages", lambda h: {"json": {"max_tokens": 4}, "headers": h}),
    ("lone_surrogate", lambda h: {"content": b'{"messages":[{"role":"user","content":"\\ud800"}]}', "headers": h}),
    ("no_key", lambda h: {"json": {"messages": chat_messages(0), "max_tokens": 4}, "headers": {}}),
    ("wrong_key", lambda h: {"json": {"messages": chat_messages(0)}, "headers": {"Authorization": "Bearer sk-wrong"}}),
    ("huge_n", lambda h: {"json": {"messages": chat_messages(0), "n": 10_000}, "headers": h}),
]


class Tally:
    def __init__(self):
        self.status: Counter = Counter()
        self.latency_ms: list[float] = []
        self.tokens = 0
        self.answered: list[str] = []
        self.feedback_ok = 0
        self.bodies_with_traceback = 0

    def seen(self, kind: str, response: httpx.Response):
        self.status[f"{kind}:{response.status_code}"] += 1
        if "Traceback" in response.text:
            self.bodies_with_traceback += 1


async def one(client, url, headers, kind: str, i: int, max_tokens: int, tally: Tally):
    body = {"messages": chat_messages(i), "max_tokens": max_tokens, "temperature": 0}
    start = time.perf_counter()
    if kind == "chat":
        r = await client.post(url + "/v1/chat/completions", json=body, headers=headers)
        tally.seen(kind, r)
        if r.status_code == 200:
            data = r.json()
            tally.latency_ms.append((time.perf_counter() - start) * 1000)
            tally.tokens += data["usage"]["completion_tokens"]
            if data.get("id"):
                tally.answered.append(data["id"])
    elif kind == "stream":
        async with client.stream(
            "POST", url + "/v1/chat/completions", json={**body, "stream": True}, headers=headers
        ) as r:
            text = "".join([chunk async for chunk in r.aiter_text()])
        tally.status[f"stream:{r.status_code}"] += 1
        if r.status_code == 200 and "[DONE]" in text:
            tally.tokens += sum(1 for line in text.splitlines() if '"content":"' in line)
            first = next((line for line in text.splitlines() if line.startswith("data: {")), None)
            if first:
                tally.answered.append(json.loads(first[6:])["id"])
    elif kind == "feedback":
        if not tally.answered:
            return await one(client, url, headers, "chat", i, max_tokens, tally)
        target = tally.answered[i % len(tally.answered)]
        r = await client.post(url + "/v1/feedback", json={"request_id": target, "thumbs": "up"}, headers=headers)
        tally.seen(kind, r)
        tally.feedback_ok += r.status_code == 200
    else:
        name, make = MALFORMED[i % len(MALFORMED)]
        r = await client.post(url + "/v1/chat/completions", **make(headers))
        tally.seen(f"malformed_{name}", r)


async def drive(url, headers, kinds, concurrency, max_tokens, time_limit) -> tuple[Tally, float, bool]:
    tally, queue = Tally(), list(enumerate(kinds))
    queue.reverse()
    deadline = time.monotonic() + time_limit
    timed_out = False

    async def worker(client):
        nonlocal timed_out
        while queue:
            if time.monotonic() > deadline:
                timed_out = True
                return
            i, kind = queue.pop()
            try:
                await one(client, url, headers, kind, i, max_tokens, tally)
            except httpx.HTTPError as exc:
                tally.status[f"{kind}:transport_{type(exc).__name__}"] += 1

    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600), limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return tally, time.perf_counter() - start, timed_out


def tree_rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def tree_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of the process and of each child, by name: on 2 cores the
    gateway's share is taken from llama-server's."""
    import psutil

    proc = psutil.Process(pid)
    out = {}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            name = "llama-server" if "llama" in p.name() else ("gateway" if p.pid == pid else p.name())
            out[name] = out.get(name, 0.0) + t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def summarize(tally: Tally, wall: float) -> dict:
    five_xx = sum(v for k, v in tally.status.items() if k.split(":")[1].startswith("5"))
    return {
        "by_kind_status": dict(sorted(tally.status.items())),
        "requests_done": sum(tally.status.values()),
        "5xx": five_xx,
        "bodies_with_traceback": tally.bodies_with_traceback,
        "wall_s": round(wall, 1),
        "completion_tokens": tally.tokens,
        "tokens_per_s": round(tally.tokens / wall, 2),
        "p50_ms": round(percentile(tally.latency_ms, 50), 1) if tally.latency_ms else None,
        "p95_ms": round(percentile(tally.latency_ms, 95), 1) if tally.latency_ms else None,
        "p99_ms": round(percentile(tally.latency_ms, 99), 1) if tally.latency_ms else None,
    }


def bare_llama_server(args, gguf, binary, work) -> dict:
    from odyssey.engines.llamacpp import server_command

    port, key = free_port(), "bare-key"
    cmd = server_command(
        binary, gguf, port, key, slots=args.slots, context=args.slots * 512, threads=os.cpu_count() or 2
    )
    proc = subprocess.Popen(cmd, stdout=open(work / "bare.log", "wb"), stderr=subprocess.STDOUT)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, "/health")
        kinds = ["chat"] * args.bare_requests
        cpu0, rss0 = tree_cpu_s(proc.pid), tree_rss_mb(proc.pid)
        tally, wall, _ = asyncio.run(
            drive(f"http://127.0.0.1:{port}", headers, kinds, args.concurrency, args.max_tokens, args.time_limit)
        )
        cpu1, rss1 = tree_cpu_s(proc.pid), tree_rss_mb(proc.pid)
    finally:
        stop(proc)
    cpu = {k: round(v - cpu0.get(k, 0.0), 1) for k, v in cpu1.items()}
    return {**summarize(tally, wall), "cpu_s": cpu, "rss_mb_start": round(rss0, 1), "rss_mb_end": round(rss1, 1)}


def start_serve(root: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    cmd = [sys.executable, "-m", "odyssey.cli", "serve", "-p", str(root), "--port", str(port), "--backend", "llama.cpp"]
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, cwd=REPO)


def store_ids(root: Path) -> tuple[set, int]:
    from odyssey.project import Project
    from odyssey.store import deploy as sd

    project = Project.load(root)
    try:
        ids = {r["request_id"] for r in sd.requests(project.store) if r["status"] == 200}
        return ids, len(sd.feedback(project.store))
    finally:
        project.store.close()


def soak(args, root, key, work) -> dict:
    port = free_port()
    proc = start_serve(root, port, work / "serve.log")
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    try:
        wait_ready(url, proc, "/v1/models", headers=headers)
        rss_cold = tree_rss_mb(proc.pid)
        # warm-up: 5 % of the load, so llama.cpp's prompt cache (bounded by --cache-ram) is full before the
        # leak check starts; the growth from a cold server is reported too
        warm = max(8, args.requests // 20)
        asyncio.run(drive(url, headers, ["chat"] * warm, args.concurrency, args.max_tokens, args.time_limit))
        rss_start, cpu_start = tree_rss_mb(proc.pid), tree_cpu_s(proc.pid)
        kinds = request_plan(args.requests)
        tally, wall, timed_out = asyncio.run(
            drive(url, headers, kinds, args.concurrency, args.max_tokens, args.time_limit)
        )
        rss_end, cpu_end = tree_rss_mb(proc.pid), tree_cpu_s(proc.pid)
    finally:
        stop(proc)
    ids, n_feedback = store_ids(root)
    out = summarize(tally, wall)
    out.update(
        requests_planned=args.requests,
        stopped_at_time_limit=timed_out,
        rss_mb_cold=round(rss_cold, 1),
        warmup_requests=warm,
        rss_mb_start=round(rss_start, 1),
        rss_mb_end=round(rss_end, 1),
        memory_growth=round(rss_end / rss_start - 1, 4),
        memory_growth_from_cold=round(rss_end / rss_cold - 1, 4),
        cpu_s={k: round(cpu_end.get(k, 0.0) - cpu_start.get(k, 0.0), 1) for k in cpu_end},
        answered=len(tally.answered),
        lost_records=sum(1 for i in tally.answered if i not in ids),
        feedback_ok=tally.feedback_ok,
        lost_feedback=max(0, tally.feedback_ok - n_feedback),
    )
    return out


def kill9(args, root, key, work) -> dict:
    import psutil

    port = free_port()
    proc = start_serve(root, port, work / "serve-kill9.log")
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    wait_ready(url, proc, "/v1/models", headers=headers)
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]

    async def load_then_kill():
        task = asyncio.create_task(drive(url, headers, ["chat"] * 100_000, args.concurrency, args.max_tokens, 3600))
        await asyncio.sleep(args.kill_after)
        os.kill(proc.pid, signal.SIGKILL)
        return await task

    tally, _, _ = asyncio.run(load_then_kill())
    proc.wait()
    time.sleep(3)  # the parent-death signal reaches the child at once; give it time to exit
    orphans = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    db = sqlite3.connect(root / ".odyssey" / "odyssey.db")
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    restart = time.perf_counter()
    proc2 = start_serve(root, port, work / "serve-restart.log")
    try:
        wait_ready(url, proc2, "/v1/models", headers=headers)
        restart_s = time.perf_counter() - restart
        r = httpx.post(
            url + "/v1/chat/completions", json={"messages": chat_messages(1), "max_tokens": 2}, headers=headers
        )
        restart_ok = r.status_code == 200
    finally:
        stop(proc2)
    ids, _ = store_ids(root)
    return {
        "kill_after_s": args.kill_after,
        "answered_before_kill": len(tally.answered),
        "kill9_lost_records": sum(1 for i in tally.answered if i not in ids),
        "kill9_integrity": integrity,
        "kill9_orphans": len(orphans),
        "kill9_restart_s": round(restart_s, 1),
        "kill9_restart_ok": restart_ok,
        "client_side_errors": dict(tally.status),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--bare-requests", type=int, default=2_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--time-limit", type=float, default=1800, help="seconds; the load stops there if not done")
    ap.add_argument("--kill-after", type=float, default=20)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/serve_soak.json"))
    args = ap.parse_args()
    from odyssey.engines.llamacpp import server_binary

    binary, gguf = server_binary(), PACKAGED["smollm2-135m-instruct"].weights_file()
    work = Path(tempfile.mkdtemp(prefix="serve-soak-"))
    command = "python benchmarks/serve_soak.py " + " ".join(sys.argv[1:])
    out: dict = {"benchmark": "serve_soak", "command": command, "settings": vars(args), "work": str(work)}
    print(f"bare llama-server, {args.bare_requests} chat requests @{args.concurrency}", flush=True)
    out["bare_llama_server"] = bare_llama_server(args, gguf, binary, work)
    print(json.dumps(out["bare_llama_server"]), flush=True)
    root, key = serve_project(work / "proj", args.slots, args.slots * 512, "soak")
    print(f"odyssey serve, {args.requests} mixed requests @{args.concurrency}", flush=True)
    out["odyssey"] = soak(args, root, key, work)
    print(json.dumps(out["odyssey"]), flush=True)
    print(f"kill -9 under load after {args.kill_after} s", flush=True)
    out["kill9"] = kill9(args, root, key, work)
    print(json.dumps(out["kill9"]), flush=True)
    ody, bare = out["odyssey"], out["bare_llama_server"]
    out.update(
        ratio_vs_llama_server=round(ody["tokens_per_s"] / bare["tokens_per_s"], 3) if bare["tokens_per_s"] else None,
        lost_records=ody["lost_records"],
        errors_5xx=ody["5xx"],
        memory_growth=ody["memory_growth"],
        # the same figure per answered chat request (the mixed load spends part of its time on the rest)
        ratio_chat_per_s=round((ody["answered"] / ody["wall_s"]) / (bare["requests_done"] / bare["wall_s"]), 3),
        gateway_cpu_share=round(ody["cpu_s"].get("gateway", 0) / max(sum(ody["cpu_s"].values()), 1e-9), 3),
        kill9_lost_records=out["kill9"]["kill9_lost_records"],
        kill9_integrity=out["kill9"]["kill9_integrity"],
        kill9_orphans=out["kill9"]["kill9_orphans"],
        goals={"lost_records": 0, "errors_5xx": 0, "memory_growth": "< 0.10", "ratio_vs_llama_server": ">= 0.95"},
    )
    print(
        json.dumps(
            {
                k: out[k]
                for k in (
                    "ratio_vs_llama_server",
                    "ratio_chat_per_s",
                    "gateway_cpu_share",
                    "lost_records",
                    "errors_5xx",
                    "memory_growth",
                )
            }
        )
    )
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
