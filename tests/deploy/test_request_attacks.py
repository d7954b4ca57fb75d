"""Issue 26's attacks through a request to a real `odyssey serve`: a URL in a message (SSRF), a model name
that looks like a path, and a report plot whose recorded path leads out of the store (a tampered row,
a planted symlink). Each must get a 4xx in OpenAI's error shape and reach nothing."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.deploy.test_security import error_of


@pytest.fixture
def metadata():
    """A real HTTP server standing in for 169.254.169.254: it counts every request that reaches it."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "{url}/latest/meta-data/iam/security-credentials/"}},
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
        {"type": "input_audio", "input_audio": {"data": "{url}/a.wav", "format": "wav"}},
        {"type": "file", "file": {"file_data": "{url}/f", "filename": "f"}},
    ],
    ids=["image-url-metadata", "image-url-file", "audio", "file"],
)
def test_a_url_in_a_message_is_refused_and_never_fetched(server, metadata, part):
    url, seen = metadata
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "describe"}, _with_url(part, url)]},
        ],
        "max_tokens": 2,
    }
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers=server.headers(), timeout=60)
    assert r.status_code == 400, r.text
    assert error_of(r)["param"].startswith("messages.0.content")  # the schema allows text parts only
    assert seen == []


def _with_url(part: dict, url: str) -> dict:
    import json

    return json.loads(json.dumps(part).replace("{url}", url))


@pytest.mark.parametrize(
    "model",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "tiny-a/../../../etc/passwd",
        "..%2f..%2fetc",
        "hf:evil/repo",
        "tiny-a\x00",
        "best",
    ],
)
def test_a_model_name_is_looked_up_never_opened(server, model):
    """`model` only selects among the served candidates (or their references): a path or hub id loads nothing."""
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers=server.headers(),
        timeout=60,
    )
    assert r.status_code == 404, r.text
    err = error_of(r)
    assert err["code"] == "model_not_found" and "served: tiny-a, tiny-b" in err["message"]
    assert "root:" not in r.text


def _plot_row(server, path) -> int:
    """An artifact row of kind report-plot naming ``path``, written as a tampered database would hold it."""
    project = server.project()
    store = project.store
    run = store.start_run("evaluate", {}, {})
    with store.transaction() as db:
        cur = db.execute(
            "INSERT INTO artifacts (run_id, kind, path, sha256, size, created_at) VALUES (?, 'report-plot', ?, '', 0, '')",
            (run, str(path)),
        )
    store.close()
    return cur.lastrowid


def test_a_plot_row_naming_a_file_outside_the_store_serves_nothing(server, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG top secret")
    for path in (secret, "/etc/passwd", server.root / "odyssey.yaml"):
        art = _plot_row(server, path)
        r = httpx.get(server.url + f"/ui/api/artifacts/{art}", headers=server.headers())
        assert r.status_code == 404 and error_of(r)["code"] == "not_found", (path, r.text[:200])
        assert b"secret" not in r.content and b"root:" not in r.content


def test_a_symlink_planted_in_the_artifacts_folder_serves_nothing(server, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG top secret")
    project = server.project()
    folder = project.store.artifacts_root / "run-planted"
    project.store.close()
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "plot.png"
    link.symlink_to(secret)
    r = httpx.get(server.url + f"/ui/api/artifacts/{_plot_row(server, link)}", headers=server.headers())
    assert r.status_code == 404 and b"secret" not in r.content
