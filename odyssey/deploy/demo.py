"""The deploy step of ``odyssey demo``: serve the best candidate behind the gateway (in-process, on
a free port), call it with the official ``openai`` client (one streamed answer), give feedback
(thumbs, a better answer), export the preference pairs, and record a 'deploy' candidate."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


def demo_step(project, console, model: str, quick: bool = False):
    from rich.rule import Rule

    from odyssey.deploy.backends import free_port
    from odyssey.deploy.export import export_feedback
    from odyssey.deploy.keys import create_key
    from odyssey.deploy.serve import build_app, pick_candidates
    from odyssey.errors import require

    uvicorn = require("uvicorn", "deploy", "the demo's deploy step")
    openai = require("openai", "deploy", "the demo's deploy step")

    console.print(Rule("7. deploy: odyssey keys create + odyssey serve + feedback export"))
    store = project.store
    key = create_key(store, f"demo-{int(time.time())}")
    [choice] = pick_candidates(project, ["best"])
    app = build_app(project, ["best"])
    served = app.state.gateway.models[choice.name]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    run_id = store.start_run("deploy", project.spec.as_dict(), {"candidate": choice.name, "demo": True})
    thread.start()
    try:
        _wait_until_started(server, thread)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key.key, max_retries=0)
        examples = project.examples("test", 1 if quick else 2)
        calls = _call(client, choice.name, examples, max_tokens=16 if quick else 48)
        _give_feedback(port, key.key, calls.rows)
    finally:
        server.should_exit = True
        thread.join(60)
    path, n_pairs = export_feedback(project, "preference")
    _record(store, run_id, choice, served.backend.kind, calls, n_pairs, path)
    _show(console, choice.name, served.backend.kind, key.prefix, calls, n_pairs, path)


@dataclass
class _Calls:
    """The demo's requests: (example, request id, answer) each, their latencies (ms), the completion
    tokens and the wall time of them all."""

    rows: list[tuple] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    wall_s: float = 0.0


def _wait_until_started(server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 300
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.1)


def _call(client, model: str, examples, max_tokens: int) -> _Calls:
    """One request per example through the ``openai`` client."""
    calls, started = _Calls(), time.perf_counter()
    for i, ex in enumerate(examples):
        t0 = time.perf_counter()
        messages = [{"role": "user", "content": ex.input}]
        if i == 0:  # streamed, as the playground does
            text, rid, tokens = _call_streamed(client, model, messages, max_tokens)
        else:
            resp = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
            text, rid, tokens = resp.choices[0].message.content, resp.id, resp.usage.completion_tokens
        calls.tokens += tokens
        calls.latencies.append((time.perf_counter() - t0) * 1000)
        calls.rows.append((ex, rid, text))
    calls.wall_s = time.perf_counter() - started
    return calls


def _call_streamed(client, model: str, messages: list[dict], max_tokens: int) -> tuple[str, str | None, int]:
    """(the answer, the request id, its completion tokens) of a streamed request."""
    text, rid, tokens = "", None, 0
    for chunk in client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        rid = chunk.id
        text += "".join(c.delta.content or "" for c in chunk.choices)
        tokens += chunk.usage.completion_tokens if chunk.usage else 0
    return text, rid, tokens


def _give_feedback(port: int, api_key: str, rows: list[tuple]) -> None:
    """A better answer (the reference) for the first request, thumbs up for the others."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"}
    ex, rid, _ = rows[0]
    httpx.post(
        f"http://127.0.0.1:{port}/v1/feedback",
        headers=headers,
        json={"request_id": rid, "correction": ex.target, "source": "demo"},
    ).raise_for_status()
    for _, rid, _ in rows[1:]:
        httpx.post(
            f"http://127.0.0.1:{port}/v1/feedback",
            headers=headers,
            json={"request_id": rid, "thumbs": "up", "source": "demo"},
        ).raise_for_status()


def _record(store, run_id: int, choice, backend: str, calls: _Calls, n_pairs: int, path) -> None:
    """The 'deploy' candidate, its serving metrics and the run's summary."""
    from odyssey.evaluate import percentile

    metrics = {
        "p50_latency_ms": percentile(calls.latencies, 50),
        "p95_latency_ms": percentile(calls.latencies, 95),
        "tokens_per_s": calls.tokens / calls.wall_s,
    }
    cand = store.upsert_candidate(
        f"{choice.name}@serve",
        "deploy",
        choice.model_ref,
        {"prompt": choice.prompt, "backend": backend},
        (store.candidate(choice.name) or {}).get("id"),
        run_id,
    )
    store.log_metrics(run_id, metrics, candidate_id=cand, split="serve")
    store.set_summary(
        run_id,
        {
            "candidate": choice.name,
            "backend": backend,
            **metrics,
            "preference_pairs": n_pairs,
            "export": str(path),
        },
    )
    store.finish_run(run_id, "succeeded")


def _show(console, name: str, backend: str, key_prefix: str, calls: _Calls, n_pairs: int, path) -> None:
    from odyssey.render import served_table

    rows = calls.rows
    console.print(
        served_table(
            f"served {name} ({backend}) at /v1 with key {key_prefix}…",
            [(rid, text) for _, rid, text in rows],
            calls.latencies,
        )
    )
    console.print(f"captured {len(rows)} requests + {len(rows)} feedback items; {n_pairs} preference pair(s) -> {path}")
    console.print(
        "serve it yourself: odyssey keys create --name me && odyssey serve --candidate best  "
        "(web UI at http://127.0.0.1:8000/ui/)"
    )
