"""Attacks and bugs from issue 26 (and issue 25 points 3, 5, 9), each tried against a real
`odyssey serve` from outside, as a client would: raw bytes, raw paths, no key, a revoked key."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.deploy.conftest import REPO, make_project, start_server, stop_server


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]


def raw(url: str, target: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    """One request with the target sent byte for byte (no client-side normalization of ../ or %2e)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest(method, target, skip_accept_encoding=True)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


# ---- lone surrogates ------------------------------------------------------------------------------

SURROGATE_CASES = [
    ("/v1/chat/completions", '{"messages":[{"role":"user","content":"hi \\ud800"}]}', "messages.0.content"),
    (
        "/v1/chat/completions",
        '{"messages":[{"role":"system","content":"\\udfff"},{"role":"user","content":"x"}]}',
        "messages.0.content",
    ),
    (
        "/v1/chat/completions",
        '{"messages":[{"role":"user","content":[{"type":"text","text":"\\ud800"}]}]}',
        "messages.0.content.0.text",
    ),
    ("/v1/chat/completions", '{"messages":[{"role":"user","content":"x"}],"stop":["\\ud800"]}', "stop.0"),
    ("/v1/completions", '{"prompt":"\\ud800abc","max_tokens":2}', "prompt"),
    ("/v1/completions", '{"prompt":"abc","stop":"\\udc00"}', "stop"),
    ("/v1/embeddings", '{"input":["fine","\\ud800"]}', "input.1"),
    ("/v1/feedback", '{"prompt":"\\ud800","chosen":"a","rejected":"b"}', "prompt"),
]


@pytest.mark.parametrize("path,body,param", SURROGATE_CASES)
def test_lone_surrogate_is_a_400_in_openai_shape_and_keeps_the_connection(server, path, body, param):
    u = urlparse(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", path, body=body.encode(), headers={**server.headers(), "Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    assert resp.status == 400, data
    assert data["error"]["code"] == "invalid_unicode" and data["error"]["param"] == param
    assert data["error"]["type"] == "invalid_request_error" and "surrogate" in data["error"]["message"]
    sock = conn.sock
    assert sock is not None and not resp.will_close  # keep-alive survived
    conn.request("GET", "/health")
    again = conn.getresponse()
    assert again.status == 200 and json.loads(again.read())["status"] == "ok"
    assert conn.sock is sock  # the same connection answered
    conn.close()


def test_raw_surrogate_bytes_and_valid_pairs(server):
    # CESU-style bytes of a lone surrogate (ED A0 80): not UTF-8; json decodes them with surrogatepass
    body = b'{"prompt":"a\xed\xa0\x80b","max_tokens":2}'
    r = httpx.post(
        server.url + "/v1/completions", content=body, headers={**server.headers(), "Content-Type": "application/json"}
    )
    assert r.status_code == 400 and error_of(r)["code"] in ("invalid_unicode", "invalid_value")
    # an escaped surrogate *pair* is a real character (what json.dumps writes for an emoji): accepted
    r = httpx.post(
        server.url + "/v1/completions",
        content=b'{"prompt":"smile \\ud83d\\ude00","max_tokens":2}',
        headers={**server.headers(), "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text


def test_metrics_count_every_status_class_with_help_and_type(server):
    httpx.post(
        server.url + "/v1/completions",
        content=b'{"prompt":"\\ud800"}',
        headers={**server.headers(), "Content-Type": "application/json"},
    )
    httpx.get(server.url + "/v1/models")  # 401
    httpx.get(server.url + "/v1/models", headers=server.headers())  # 200
    text = httpx.get(server.url + "/metrics", headers=server.headers()).text
    assert 'odyssey_http_requests_total{route="/v1/completions",method="POST",code="400",class="4xx"}' in text
    assert 'odyssey_http_requests_total{route="/v1/models",method="GET",code="401",class="4xx"}' in text
    assert 'odyssey_http_requests_total{route="/v1/models",method="GET",code="200",class="2xx"}' in text
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    samples = {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert samples <= families and families == helped  # every sample has its HELP and TYPE lines
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            assert line.split()[3] in ("counter", "gauge")


# ---- keys: every route but /health, checked before the body ---------------------------------------


def test_every_data_route_needs_a_valid_unrevoked_key(server, tmp_path):
    project = server.project()
    run = project.store.start_run("evaluate", {}, {})
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    project.store.add_artifact(run, png, "report-plot")
    art = project.store.artifacts(run)[-1]
    project.store.close()
    routes = [
        ("GET", f"/ui/api/artifacts/{art['id']}"),
        ("GET", "/ui/api/board"),
        ("GET", "/ui/api/pairs/next"),
        ("GET", "/metrics"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/feedback"),
    ]
    for method, path in routes:
        for headers in (
            {},
            {"Authorization": "Bearer ody-not-a-key"},
            server.headers("revoked"),
            {"Authorization": "Basic YTpi"},
        ):
            r = httpx.request(method, server.url + path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert error_of(r)["code"] == "invalid_api_key"
    r = httpx.get(server.url + f"/ui/api/artifacts/{art['id']}", headers=server.headers())
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG") and r.headers["content-type"] == "image/png"
    assert httpx.get(server.url + "/health").status_code == 200  # the one open data route


@pytest.mark.parametrize(
    "body,ctype",
    [
        (b"{not json", "application/json"),
        (b'{"messages": "wrong"}', "application/json"),
        (b'{"messages":[{"role":"wizard"}], "temperature": 99}', "application/json"),
        (b"x" * 30000, "application/json"),  # over the body limit too
        (b'{"messages":[{"role":"user","content":"\\ud800"}]}', "application/json"),
    ],
)
def test_no_key_is_401_before_any_body_validation(server, body, ctype):
    r = httpx.post(server.url + "/v1/chat/completions", content=body, headers={"Content-Type": ctype})
    err = error_of(r)
    assert r.status_code == 401 and err["code"] == "invalid_api_key" and err["param"] is None


# ---- body size, prompt size, curl -------------------------------------------------------------------


def test_chunked_oversized_body_is_413(server):
    def chunks():  # no Content-Length: Transfer-Encoding: chunked, 30 kB against a 20 kB limit
        yield b'{"messages":[{"role":"user","content":"'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}]}'

    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=chunks(),
        headers={**server.headers(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
    r = httpx.post(server.url + "/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 401  # no key: not even the size is discussed


def test_readme_curl_example_runs_as_written(server):
    """README: `curl -H "Authorization: Bearer $KEY" .../v1/chat/completions -d '{...}'`, no Content-Type."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = '{"messages":[{"role":"user","content":"#Person1#: hello there"}],"stream":true,"max_tokens":4}'
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-H",
            f"Authorization: Bearer {server.keys['alice']}",
            server.url + "/v1/chat/completions",
            "-d",
            body,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    events = [line for line in out.stdout.splitlines() if line.startswith("data:")]
    assert events and events[-1] == "data: [DONE]", out.stdout[:500]
    # the same without streaming, with the form type curl -d really sends
    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=body.replace("true", "false").encode(),
        headers={**server.headers(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"


# ---- issue 25.5: every user turn of a task-mode chat goes through the task prompt ----------------------


def test_every_task_mode_turn_goes_through_the_candidate_prompt(server):
    from odyssey.store import deploy as sd

    msgs = [
        {"role": "user", "content": "#Person1#: first dialogue"},
        {"role": "assistant", "content": "a summary"},
        {"role": "user", "content": "#Person1#: the second dialogue, later in the same chat"},
    ]
    r = httpx.post(
        server.url + "/v1/chat/completions",
        headers=server.headers(),
        timeout=60,
        json={"model": "tiny-a", "messages": msgs, "max_tokens": 4, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    assert "single-turn" in r.headers["x-odyssey-prompt"]
    project = server.project()
    row = sd.request(project.store, r.json()["id"])
    project.store.close()
    assert "Summarize the following dialogue" in row["rendered_prompt"]
    assert "the second dialogue" in row["rendered_prompt"] and "first dialogue" not in row["rendered_prompt"]
    models = httpx.get(server.url + "/v1/models", headers=server.headers()).json()["data"]
    assert {m["turns"] for m in models} == {"single"} and {m["prompt_mode"] for m in models} == {"task"}


def test_a_denormal_temperature_is_greedy_not_a_500(server):
    """Found by the stateful fuzzer: temperature 2.2e-311 made logits / temperature inf (a NaN 500)."""
    for temperature in (2.225073858507e-311, 5e-324, 1e-9):
        r = httpx.post(
            server.url + "/v1/chat/completions",
            headers=server.headers(),
            timeout=60,
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": temperature},
        )
        assert r.status_code == 200, r.text


# ---- /v1/models shows where backends run to admin keys only --------------------------------------------


def test_models_hide_backend_locations_from_ordinary_keys(server):
    from odyssey.deploy.keys import create_key

    project = server.project()
    admin = create_key(project.store, "models-admin", ["admin"]).key
    project.store.close()
    for m in httpx.get(server.url + "/v1/models", headers=server.headers()).json()["data"]:
        assert not {"upstream", "pid", "gguf", "model", "model_ref"} & set(m), m
        assert m["backend"] == "transformers"
    seen = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {admin}"}).json()["data"]
    assert [m["model_ref"] for m in seen] == ["tiny:llama", "tiny:gpt2"]


# ---- static files cannot escape their folder -----------------------------------------------------------

ESCAPES = [
    "/ui/../../../../../../etc/passwd",
    "/ui/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/ui/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/ui/%2e%2e%2f%2e%2e%2fserver.py",
    "/ui/..%2fserver.py",
    "/ui/..%5cserver.py",
    "/ui//etc/passwd",
    "/ui/%2fetc%2fpasswd",
    "/ui/%00",
    "/ui/index.html%00.png",
    "/docs/assets/..%2f..%2fserver.py",
    "/docs/assets/%2e%2e/app.js",
    "/ui/....//....//etc/passwd",
    "/ui/%252e%252e/%252e%252e/etc/passwd",
]


@pytest.mark.parametrize("target", ESCAPES)
def test_static_paths_cannot_escape_their_folder(server, target):
    status, data = raw(server.url, target)
    assert status in (400, 404), (status, data[:200])
    assert b"root:" not in data and b"def create_app" not in data and b"Traceback" not in data


def test_static_files_refuse_symlinks_out_of_their_folder(tmp_path):
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from odyssey.deploy.server import SafeStatic

    folder, secret = tmp_path / "static", tmp_path / "secret.txt"
    folder.mkdir()
    secret.write_text("TOP SECRET")
    (folder / "ok.txt").write_text("fine")
    (folder / "leak.txt").symlink_to(secret)
    (folder / "up").symlink_to(tmp_path)
    client = TestClient(Starlette(routes=[Mount("/s", SafeStatic(directory=folder))]))
    assert client.get("/s/ok.txt").text == "fine"
    for path in ("/s/leak.txt", "/s/up/secret.txt"):
        r = client.get(path)
        assert r.status_code == 404 and "TOP SECRET" not in r.text


# ---- /docs works offline ------------------------------------------------------------------------------


def test_docs_load_no_asset_from_a_cdn(server):
    import re

    html = httpx.get(server.url + "/docs").text
    assert "SwaggerUIBundle" in html
    assert not re.findall(r"https?://", html), re.findall(r"https?://[^\"' ]+", html)
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', html):
        r = httpx.get(server.url + asset)
        assert r.status_code == 200 and len(r.content) > 100, asset
    assert (REPO / "odyssey/deploy/static/docs/LICENSE").read_text().lstrip().startswith("Apache License")


# ---- a second server: limits, defaults, clean exit ----------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory, _odyssey_home):
    from odyssey.deploy.keys import create_key
    from odyssey.project import Project

    root = make_project(
        tmp_path_factory.mktemp("limits") / "proj", "deploy:\n  max_prompt_tokens: 64\n  max_request_bytes: 2000000\n"
    )
    key = create_key(Project.load(root).store, "k").key
    log = root / "serve.log"
    proc, url = start_server(root, ["--candidate", "tiny-a"], log)
    yield {"proc": proc, "url": url, "headers": {"Authorization": f"Bearer {key}"}, "log": log, "root": root}
    stop_server(proc)


def test_huge_prompt_is_refused_cheaply_and_exactly(limited):
    url, h = limited["url"], limited["headers"]
    huge = "word " * 60_000  # 300k characters, under the 2 MB body limit
    t0 = time.perf_counter()
    for path, body, param in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": huge}]}, "messages"),
        ("/v1/completions", {"prompt": huge}, "prompt"),
    ):
        r = httpx.post(url + path, headers=h, json=body, timeout=60)
        err = error_of(r)
        assert r.status_code == 400 and err["code"] == "context_length_exceeded" and err["param"] == param
        assert "characters" in err["message"] and "64" in err["message"]
    assert time.perf_counter() - t0 < 10
    # just over the limit in tokens, far under any characters bound: counted exactly
    r = httpx.post(
        url + "/v1/chat/completions",
        headers=h,
        timeout=60,
        json={"messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(80))}]},
    )
    err = error_of(r)
    assert r.status_code == 400 and err["code"] == "context_length_exceeded" and "tokens" in err["message"]
    ok = httpx.post(
        url + "/v1/chat/completions",
        headers=h,
        timeout=60,
        json={"messages": [{"role": "user", "content": "short"}], "max_tokens": 2},
    )
    assert ok.status_code == 200, ok.text


def test_n_and_max_tokens_are_bounded_and_documented(limited):
    url, h = limited["url"], limited["headers"]
    for extra, param in (({"n": 2}, "n"), ({"max_tokens": 10**9}, "max_tokens"), ({"max_tokens": 0}, "max_tokens")):
        r = httpx.post(
            url + "/v1/chat/completions", headers=h, json={"messages": [{"role": "user", "content": "x"}], **extra}
        )
        assert r.status_code == 400 and error_of(r)["param"] == param
    spec = httpx.get(url + "/openapi.json").json()["components"]["schemas"]["ChatBody"]["properties"]
    assert spec["n"]["maximum"] == 1 and spec["max_tokens"]["anyOf"][0]["maximum"] == 1024


def test_default_bind_is_loopback(limited):
    import psutil

    port = urlparse(limited["url"]).port
    conns = [
        c
        for c in psutil.Process(limited["proc"].pid).net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert conns and all(c.laddr.ip == "127.0.0.1" for c in conns)


def test_port_in_use_exits_5_before_starting_anything(limited, tmp_path):
    port = urlparse(limited["url"]).port  # held by the running server
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "odyssey.cli",
            "serve",
            "-p",
            str(limited["root"]),
            "--port",
            str(port),
            "--candidate",
            "tiny-a",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 5, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "serving" not in text and "odyssey serve: http" not in text and "Traceback" not in text
    assert str(port) in text and "--port 0" in text
    assert time.perf_counter() - t0 < 60  # no model was loaded


def test_binding_all_interfaces_without_keys_warns(tmp_path, capsys):
    from odyssey.deploy.serve import bind, warn_exposure
    from odyssey.errors import Unavailable
    from odyssey.project import Project

    project = Project.load(make_project(tmp_path / "p"))
    warn_exposure(project, "127.0.0.1")
    assert capsys.readouterr().err == ""
    warn_exposure(project, "0.0.0.0")
    err = capsys.readouterr().err
    assert "warning" in err and "no API keys" in err and "--host 127.0.0.1" in err
    sock = bind("127.0.0.1", 0)
    sock.listen()
    try:
        with pytest.raises(Unavailable, match="another process holds this port") as exc:
            bind("127.0.0.1", sock.getsockname()[1])
        assert exc.value.exit_code == 5 and "--port 0" in exc.value.hint
    finally:
        sock.close()


def test_sigterm_after_a_clean_drain_exits_0(tmp_path):
    from odyssey.deploy.keys import create_key
    from odyssey.project import Project

    root = make_project(tmp_path / "proj")
    key = create_key(Project.load(root).store, "k").key
    proc, url = start_server(root, ["--candidate", "tiny-a"], tmp_path / "serve.log")
    r = httpx.post(
        url + "/v1/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"prompt": "hello", "max_tokens": 2},
        timeout=60,
    )
    assert r.status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, (tmp_path / "serve.log").read_text()[-2000:]
    run = Project.load(root).store.runs("deploy")[0]
    assert run["status"] == "succeeded"


# ---- an escaped exception is a JSON 500, counted -------------------------------------------------------


def test_an_unexpected_error_is_a_json_500_without_a_trace(tmp_path):
    from starlette.testclient import TestClient

    from odyssey.deploy.backends import Backend
    from odyssey.deploy.keys import create_key
    from odyssey.deploy.server import Served, create_app
    from odyssey.project import Project

    class Broken:
        def get_vocab(self):
            return {"a": 0}

        def __call__(self, *a, **kw):
            raise RuntimeError("tokenizer exploded at /secret/path.py line 3")

    class FakeBackend(Backend):
        kind = "fake"
        tokenizer = Broken()

    project = Project.load(make_project(tmp_path / "p"))
    key = create_key(project.store, "k").key
    app = create_app(project, [Served("fake", "tiny:llama", FakeBackend())], project.spec.deploy)
    with TestClient(app, raise_server_exceptions=False) as client:
        h = {"Authorization": f"Bearer {key}"}
        r = client.post("/v1/completions", headers=h, json={"prompt": "hi"})
        assert r.status_code == 500 and error_of(r)["code"] == "internal_error"
        assert "exploded" not in r.text and "Traceback" not in r.text and "/secret" not in r.text
        text = client.get("/metrics", headers=h).text
        assert 'route="/v1/completions",method="POST",code="500",class="5xx"} 1' in text


# ---- the managed llama-server child: its own key, loopback, dies with its parent ----------------------


@pytest.fixture
def fake_llama(tmp_path, monkeypatch):
    """A local model folder with a tiny tokenizer and a .gguf, and ODYSSEY_LLAMA_SERVER pointing at
    tests/deploy/fake_llama_server.py, so `--backend llama.cpp` runs the managed-child path."""
    from odyssey.models.tiny import build_tokenizer

    model = tmp_path / "model"
    model.mkdir()
    build_tokenizer(model)
    (model / "model.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    wrapper = tmp_path / "llama-server"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {Path(__file__).with_name("fake_llama_server.py")} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("ODYSSEY_LLAMA_SERVER", str(wrapper))
    return model


def children_of(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_managed_child_needs_its_own_key_and_dies_with_a_killed_parent(tmp_path, fake_llama):
    import psutil

    from odyssey.deploy.keys import create_key
    from odyssey.project import Project

    root = make_project(tmp_path / "proj")
    project = Project.load(root)
    project.store.upsert_candidate("gg", "prompt", str(fake_llama), {})
    key = create_key(project.store, "k").key
    admin = create_key(project.store, "root", ["admin"]).key
    project.store.close()
    proc, url = start_server(root, ["--candidate", "gg", "--backend", "llama.cpp"], tmp_path / "serve.log")
    try:
        h = {"Authorization": f"Bearer {key}"}
        r = httpx.post(url + "/v1/completions", headers=h, json={"prompt": "hello", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == " ok ok"
        [m] = httpx.get(url + "/v1/models", headers=h).json()["data"]
        assert m["backend"] == "llama.cpp" and not {"upstream", "pid", "gguf", "model_ref"} & set(m)
        [full] = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {admin}"}).json()["data"]
        child = psutil.Process(full["pid"])
        cmdline = child.cmdline()
        upstream = full["upstream"]
        assert urlparse(upstream).hostname == "127.0.0.1"
        assert "--api-key" in cmdline and cmdline[cmdline.index("--api-key") + 1] not in (key, admin)
        # a local process that finds the child's port cannot use it without the child's own key
        bypass = httpx.post(upstream + "/v1/completions", json={"prompt": [1, 2], "max_tokens": 2}, timeout=10)
        assert bypass.status_code == 401
        guessed = httpx.post(
            upstream + "/v1/completions",
            json={"prompt": [1, 2]},
            timeout=10,
            headers={"Authorization": f"Bearer {key}"},
        )
        assert guessed.status_code == 401
        assert child.pid in [c.pid for c in children_of(proc.pid)]
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 of odyssey serve: no drain, no cleanup code runs
        proc.wait(30)
        deadline = time.monotonic() + 15
        while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE  # no orphan
        with pytest.raises(httpx.HTTPError):
            httpx.get(upstream + "/health", timeout=3)
        # the answered request survived the kill -9, the store is intact, and a restart on the
        # same port and store works at once
        port = urlparse(url).port
        proc, url = start_server(
            root, ["--candidate", "gg", "--backend", "llama.cpp"], tmp_path / "serve2.log", port=port
        )
        project = Project.load(root)
        from odyssey.store import deploy as sd

        assert sd.request(project.store, r.json()["id"])["output"] == " ok ok"
        assert project.store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        project.store.close()
        again = httpx.post(url + "/v1/completions", headers=h, json={"prompt": "again", "max_tokens": 1}, timeout=60)
        assert again.status_code == 200
        stop_server(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_request_time_limit_ends_slow_answers(tmp_path):
    """A backend that stalls: past the gateway's time limit the client gets a 504 (or, streaming,
    an error event), and the key's in-flight slot is given back."""
    import asyncio

    from starlette.testclient import TestClient

    from odyssey.deploy.backends import Backend, Delta
    from odyssey.deploy.keys import create_key
    from odyssey.deploy.server import Served, create_app
    from odyssey.models.tiny import build_tokenizer
    from odyssey.project import Project

    class Slow(Backend):
        kind = "slow"
        tokenizer = build_tokenizer(tmp_path / "tok")

        async def stream(self, ids, params):
            for _ in range(100):
                await asyncio.sleep(0.05)
                yield Delta("x")
            yield Delta("", "length", len(ids), 100)

    project = Project.load(make_project(tmp_path / "p"))
    made = create_key(project.store, "k", max_concurrency=1)
    key = made.key
    app = create_app(project, [Served("slow", "tiny:llama", Slow(), mode="chat")], project.spec.deploy)
    app.state.gateway.request_timeout = 0.3  # deploy.request_timeout_s, when the spec has it
    h = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        t0 = time.perf_counter()
        r = client.post("/v1/completions", headers=h, json={"prompt": "hi"})
        assert r.status_code == 504 and error_of(r)["code"] == "timeout" and time.perf_counter() - t0 < 3
        with client.stream("POST", "/v1/completions", headers=h, json={"prompt": "hi", "stream": True}) as s:
            events = [line for line in s.iter_lines() if line.startswith("data:")]
        assert '"timeout"' in events[-1] and "[DONE]" not in events[-1]
        assert app.state.gateway.limiter.inflight[made.id] == 0  # both slots were released
        text = client.get("/metrics", headers=h).text
        assert 'code="504"' in text
