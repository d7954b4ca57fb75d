"""The deploy step of ``odyssey demo``: serve the best candidate behind the gateway (in-process, on
a free port), call it with the official ``openai`` client (one streamed answer), give feedback
(thumbs, a better answer), export the preference pairs, and record a 'deploy' candidate."""

from __future__ import annotations

import threading
import time


def demo_step(project, console, model: str, quick: bool = False):
    from rich.rule import Rule

    from odyssey.deploy.backends import free_port
    from odyssey.deploy.export import export_feedback
    from odyssey.deploy.keys import create_key
    from odyssey.deploy.serve import build_app, pick_candidates
    from odyssey.errors import require
    from odyssey.evaluate import percentile
    from odyssey.render import served_table

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
        deadline = time.monotonic() + 300
        while not server.started and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key.key, max_retries=0)
        examples = project.examples("test", 1 if quick else 2)
        max_tokens = 16 if quick else 48
        rows, latencies, tokens, started = [], [], 0, time.perf_counter()
        for i, ex in enumerate(examples):
            t0 = time.perf_counter()
            if i == 0:  # streamed, as the playground does
                text, rid = "", None
                for chunk in client.chat.completions.create(
                    model=choice.name,
                    messages=[{"role": "user", "content": ex.input}],
                    max_tokens=max_tokens,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                ):
                    rid = chunk.id
                    text += "".join(c.delta.content or "" for c in chunk.choices)
                    tokens += chunk.usage.completion_tokens if chunk.usage else 0
            else:
                resp = client.chat.completions.create(
                    model=choice.name,
                    messages=[{"role": "user", "content": ex.input}],
                    max_tokens=max_tokens,
                    temperature=0,
                )
                text, rid = resp.choices[0].message.content, resp.id
                tokens += resp.usage.completion_tokens
            latencies.append((time.perf_counter() - t0) * 1000)
            rows.append((ex, rid, text))
        wall = time.perf_counter() - started
        import httpx

        headers = {"Authorization": f"Bearer {key.key}"}
        ex, rid, text = rows[0]
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
    finally:
        server.should_exit = True
        thread.join(60)
    path, n_pairs = export_feedback(project, "preference")
    metrics = {
        "p50_latency_ms": percentile(latencies, 50),
        "p95_latency_ms": percentile(latencies, 95),
        "tokens_per_s": tokens / wall,
    }
    cand = store.upsert_candidate(
        f"{choice.name}@serve",
        "deploy",
        choice.model_ref,
        {"prompt": choice.prompt, "backend": served.backend.kind},
        (store.candidate(choice.name) or {}).get("id"),
        run_id,
    )
    store.log_metrics(run_id, metrics, candidate_id=cand, split="serve")
    store.set_summary(
        run_id,
        {
            "candidate": choice.name,
            "backend": served.backend.kind,
            **metrics,
            "preference_pairs": n_pairs,
            "export": str(path),
        },
    )
    store.finish_run(run_id, "succeeded")

    console.print(
        served_table(
            f"served {choice.name} ({served.backend.kind}) at /v1 with key {key.prefix}…",
            [(rid, text) for _, rid, text in rows],
            latencies,
        )
    )
    console.print(f"captured {len(rows)} requests + {len(rows)} feedback items; {n_pairs} preference pair(s) -> {path}")
    console.print(
        "serve it yourself: odyssey keys create --name me && odyssey serve --candidate best  "
        "(web UI at http://127.0.0.1:8000/ui/)"
    )
