"""The OpenAI-compatible API against a real `odyssey serve` subprocess: the official `openai`
client (chat, streaming, completions, embeddings), error shapes and codes, limits, capture."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import numpy as np
import openai
import pytest


def client(server, who="alice", **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.keys[who], max_retries=0, **kw)


def records(server, **where):
    from odyssey.store import deploy as sd

    project = server.project()
    rows = sd.requests(project.store)
    project.store.close()
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def test_models_lists_both_candidates(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny-a", "tiny-b"]


def test_chat_completion_is_captured_with_everything(server):
    resp = client(server).chat.completions.create(
        model="tiny-a",
        messages=[{"role": "user", "content": "A: hi. B: hello, how are you?"}],
        max_tokens=6,
        temperature=0,
    )
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage.completion_tokens <= 6 and resp.usage.prompt_tokens > 10
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    [row] = records(server, request_id=resp.id)  # written before the response was sent
    assert row["output"] == choice.message.content and row["candidate"] == "tiny-a" and row["status"] == 200
    assert row["prompt"] == [{"role": "user", "content": "A: hi. B: hello, how are you?"}]
    # task mode: the single user turn went through the candidate's prompt (its instruction is in the model input)
    assert "Summarize the following dialogue" in row["rendered_prompt"]
    assert row["prompt_tokens"] == resp.usage.prompt_tokens and row["completion_tokens"] == resp.usage.completion_tokens
    assert row["params"]["max_tokens"] == 6 and row["latency_ms"] > 0 and row["key_id"] is not None


def test_greedy_is_deterministic_and_stream_matches(server):
    c = client(server)
    msgs = [{"role": "user", "content": "Summarize: the cat sat on the mat."}]
    full = c.chat.completions.create(model="tiny-a", messages=msgs, max_tokens=8, temperature=0)
    pieces, finish, usage = [], None, None
    for chunk in c.chat.completions.create(
        model="tiny-a", messages=msgs, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            pieces.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    assert "".join(pieces) == full.choices[0].message.content
    assert len([p for p in pieces if p]) >= 2  # it really streamed, piece by piece
    assert finish == full.choices[0].finish_reason
    assert usage.completion_tokens == full.usage.completion_tokens


def test_completions_endpoint_raw_prompt(server):
    resp = client(server).completions.create(model="tiny-b", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert resp.object == "text_completion" and resp.usage.completion_tokens <= 5
    [row] = records(server, request_id=resp.id)
    assert row["rendered_prompt"] == "Once upon a time" and row["endpoint"] == "completion"


def test_embeddings_with_packaged_minilm(server):
    resp = client(server).embeddings.create(
        model="all-minilm-l6-v2", input=["a cat on a mat", "a kitten on a rug", "tax law reform"]
    )
    vectors = np.array([d.embedding for d in resp.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # semantically close texts are closer


def test_concurrent_requests_are_batched(server):
    c = client(server)

    def ask(i):
        return c.chat.completions.create(
            model="tiny-a", messages=[{"role": "user", "content": f"dialogue {i}"}], max_tokens=16, temperature=0
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(8)))
    assert all(r.choices[0].message.content is not None for r in results)
    info = {m.id: m for m in c.models.list().data}
    assert info["tiny-a"].model_extra["max_batch_seen"] > 1  # several requests shared one generate()


def test_stop_strings_cut_the_output(server):
    c = client(server)
    msgs = [{"role": "user", "content": "Summarize: a long talk about many things."}]
    full = (
        c.chat.completions.create(model="tiny-a", messages=msgs, max_tokens=20, temperature=0)
        .choices[0]
        .message.content
    )
    assert len(full) > 4
    stop = full[3:5]
    cut = c.chat.completions.create(model="tiny-a", messages=msgs, max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


# ---- errors: OpenAI's shape and codes -----------------------------------------------------------


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


def test_missing_bad_and_revoked_keys_are_401(server):
    for headers in ({}, {"Authorization": "Bearer ody-not-a-key"}, server.headers("revoked")):
        r = httpx.get(server.url + "/v1/models", headers=headers)
        assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(server, "revoked").models.list()
    assert httpx.get(server.url + "/health").status_code == 200  # health needs no key


def test_scope_is_enforced(server):
    r = httpx.post(
        server.url + "/v1/chat/completions",
        headers=server.headers("reader"),
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 403 and error_of(r)["code"] == "insufficient_scope"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 65}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "model": "gpt-4"}, "model"),
        ({}, "messages"),
    ],
)
def test_bad_requests_are_4xx_naming_the_field(server, body, param):
    r = httpx.post(server.url + "/v1/chat/completions", headers=server.headers(), json=body)
    err = error_of(r)
    assert r.status_code == (404 if param == "model" else 400), err
    assert err["param"] == param and err["type"] == "invalid_request_error"


def test_invalid_json_and_oversized_bodies(server):
    r = httpx.post(
        server.url + "/v1/chat/completions",
        headers={**server.headers(), "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert r.status_code == 400 and "JSON" in error_of(r)["message"]
    big = {"messages": [{"role": "user", "content": "x" * 30000}]}  # the fixture sets max_request_bytes 20000
    r = httpx.post(server.url + "/v1/chat/completions", headers=server.headers(), json=big)
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"


def test_prompt_longer_than_the_context_is_rejected(server):
    long = " ".join(["word"] * 3000)  # tiny models have a 256-token context; under the byte limit
    r = httpx.post(server.url + "/v1/completions", headers=server.headers(), json={"prompt": long, "max_tokens": 4})
    assert r.status_code == 400 and error_of(r)["code"] == "context_length_exceeded"


def test_rate_limit_per_key(server):
    codes = [httpx.get(server.url + "/v1/models", headers=server.headers("slow")).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[2:] == [429, 429]
    r = httpx.get(server.url + "/v1/models", headers=server.headers("slow"))
    assert error_of(r)["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) >= 1
    assert httpx.get(server.url + "/v1/models", headers=server.headers()).status_code == 200  # others unaffected


def test_concurrency_limit_per_key(server):
    body = {
        "model": "tiny-a",
        "messages": [{"role": "user", "content": "long answer please"}],
        "max_tokens": 64,
        "temperature": 0,
    }

    def go(_):
        return httpx.post(
            server.url + "/v1/chat/completions", headers=server.headers("narrow"), json=body, timeout=120
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(go, range(4)))
    assert 200 in codes and 429 in codes


def test_cors_is_off_by_default(server):
    r = httpx.options(
        server.url + "/v1/models", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in r.headers


def test_openapi_spec_and_metrics(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/feedback", "/health"} <= set(
        spec["paths"]
    )
    assert httpx.get(server.url + "/metrics").status_code == 401
    text = httpx.get(server.url + "/metrics", headers=server.headers()).text
    assert "odyssey_requests_chat_200_total" in text and "odyssey_capture_written_total" in text


# ---- feedback and export ------------------------------------------------------------------------


def test_feedback_kinds_and_export(server, tmp_path):
    from odyssey.deploy.export import export_feedback

    c = client(server)
    ask = lambda t: c.chat.completions.create(
        model="tiny-a", messages=[{"role": "user", "content": "same question"}], max_tokens=6, temperature=t, seed=1
    )
    good, bad = ask(0), ask(1.5)
    post = lambda body, who="alice": httpx.post(server.url + "/v1/feedback", headers=server.headers(who), json=body)
    assert post({"request_id": good.id, "thumbs": "up"}).json()["kind"] == "thumbs"
    assert post({"request_id": bad.id, "thumbs": "down"}, "reader").json()["kind"] == "thumbs"
    assert post({"request_id": bad.id, "correction": "A better summary."}).json()["kind"] == "correction"
    assert post({"request_id": good.id, "rating": 4}).json()["kind"] == "rating"
    assert post({"prompt": "p", "chosen": "yes", "rejected": "no", "annotator": "bob"}).json()["kind"] == "preference"
    r = post({"request_id": "chatcmpl-unknown", "thumbs": "up"})
    assert r.status_code == 404 and error_of(r)["param"] == "request_id"
    assert post({}).status_code == 400
    assert post({"thumbs": "sideways", "request_id": good.id}).status_code == 400

    project = server.project()
    path, n = export_feedback(project, "preference", tmp_path / "prefs.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert n == len(rows) >= 3
    for row in rows:
        assert {"prompt", "chosen", "rejected", "source", "annotator"} <= set(row)
    corr = [r for r in rows if r["source"].startswith("feedback:correction")]
    assert corr and corr[-1]["chosen"] == "A better summary." and corr[-1]["rejected"] == bad.choices[0].message.content
    assert corr[-1]["prompt"] == "same question"
    if good.choices[0].message.content != bad.choices[0].message.content:
        thumbs = [r for r in rows if r["source"] == "feedback:thumbs"]
        assert thumbs and thumbs[-1]["chosen"] == good.choices[0].message.content
    assert any(r["annotator"] == "bob" and r["chosen"] == "yes" for r in rows)
    path, n = export_feedback(project, "sft", tmp_path / "sft.jsonl")
    sft = [json.loads(line) for line in path.read_text().splitlines()]
    assert {"prompt": "same question", "completion": "A better summary."}.items() <= sft[
        [r["completion"] for r in sft].index("A better summary.")
    ].items()
    project.store.close()


def test_preference_queue_roundtrip(server):
    from odyssey.store import deploy as sd

    project = server.project()
    sd.enqueue_pairs(
        project.store,
        [
            {"prompt": "q1", "a": "A1", "b": "B1", "source": "align"},
            {"prompt": "q2", "a": "A2", "b": "B2", "source": "align"},
        ],
    )
    h = server.headers()
    first = httpx.get(server.url + "/ui/api/pairs/next", headers=h).json()
    assert first["pending"] >= 2
    pid = first["pair"]["id"]
    r = httpx.post(server.url + "/v1/feedback", headers=h, json={"queue_id": pid, "choice": "b"})
    assert r.status_code == 200
    done = sd.pair(project.store, pid)
    assert done["status"] == "done" and done["choice"] == "b"
    fb = [f for f in sd.feedback(project.store, "preference") if f["id"] == r.json()["id"]][0]
    assert (fb["chosen"], fb["rejected"]) == (first["pair"]["b_text"], first["pair"]["a_text"])
    again = httpx.post(server.url + "/v1/feedback", headers=h, json={"queue_id": pid, "choice": "a"})
    assert again.status_code == 404  # a pair is decided once
    project.store.close()
