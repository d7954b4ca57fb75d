"""SSRF (issue 26): every URL Odyssey fetches, tried with the URLs an attacker would write.

Configured endpoints (evaluate.openai.base_url, align.judge.endpoint, tracking.mlflow.uri) may name any
host but only over http(s), and their clients follow no redirect; a URL in a document list is refused
before anything is fetched, and links inside documents are never followed. Real local HTTP servers
count every request that reaches them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from odyssey.errors import OdysseyError, Unavailable
from odyssey.urls import check_url, private_kind
from tests.conftest import tiny_project


class Recorder:
    """A real HTTP server on 127.0.0.1 that records each request; ``redirect_to`` makes it answer 307."""

    def __init__(self, redirect_to: str | None = None):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                seen.append((self.command, self.path, self.headers.get("Authorization")))
                if redirect_to:
                    self.send_response(307)
                    self.send_header("Location", redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"secret": "instance-credentials"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def metadata():
    """Stands in for 169.254.169.254 (a test cannot bind it): what must never be reached."""
    server = Recorder()
    yield server
    server.close()


@pytest.fixture
def redirector(metadata):
    server = Recorder(redirect_to=metadata.url)
    yield server
    server.close()


# ---- the shared check -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "ftp://example.com/x",
        "dict://127.0.0.1:11211/stats",
        "javascript:alert(1)",
        "//example.com/v1",
        "",
        "http://exa mple.com/",
        "http://example.com/\r\nHost: evil",
        "http:///v1",
        "http://example.com:99999/",
    ],
)
def test_only_http_urls_with_a_host_pass(url):
    with pytest.raises(OdysseyError, match="evaluate.openai.base_url"):
        check_url(url, "evaluate.openai.base_url")


PRIVATE = [
    ("http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)"),
    ("http://[fe80::1]/", "link-local (cloud metadata)"),
    ("http://127.0.0.1:8000/", "loopback"),
    ("http://2130706433/", "loopback"),  # 127.0.0.1 as one decimal number
    ("http://0x7f000001/", "loopback"),  # ... as hex
    ("http://0177.0.0.1/", "loopback"),  # ... with an octal first byte
    ("http://127.1/", "loopback"),  # ... shortened
    ("http://localhost/", "loopback"),  # a name that resolves to it
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6
    ("http://[::ffff:169.254.169.254]/", "link-local (cloud metadata)"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://100.64.0.1/", "reserved"),  # carrier-grade NAT: not public either
]


@pytest.mark.parametrize(("url", "kind"), PRIVATE)
def test_a_given_url_may_not_resolve_to_a_private_address(url, kind):
    with pytest.raises(OdysseyError, match="resolves to") as err:
        check_url(url, "document url", allow_private=False)
    assert f"a {kind} address" in err.value.message
    assert check_url(url, "evaluate.openai.base_url") == url  # configured endpoints may be local


@pytest.mark.parametrize("url", ["http://8.8.8.8/", "https://[2001:4860:4860::8888]/v1", "http://1.1.1.1:8080/x"])
def test_public_addresses_pass(url):
    assert check_url(url, "document url", allow_private=False) == url


def test_private_kind_reads_mapped_addresses():
    assert private_kind("::ffff:10.1.2.3") == "private" and private_kind("8.8.4.4") is None


# ---- configured endpoints: the scheme is checked where each is used ---------------------------------


def test_openai_engine_refuses_a_file_url_before_any_request(monkeypatch):
    from odyssey.engines import open_engine
    from odyssey.spec import EvaluateSpec

    monkeypatch.delenv("ODYSSEY_ENGINE")
    spec = EvaluateSpec(engine="openai", openai={"base_url": "file:///etc/passwd"})
    with pytest.raises(OdysseyError, match=r"evaluate.openai.base_url: the scheme file:// .* is not allowed"):
        open_engine("tiny:llama", evaluate=spec, quiet=True)


def test_judge_endpoint_refuses_gopher(metadata):
    from odyssey.align.judge import EndpointJudge

    with pytest.raises(OdysseyError, match=r"align.judge.endpoint: the scheme gopher://"):
        EndpointJudge("gopher://" + metadata.url.removeprefix("http://") + "/_x", "m")
    assert metadata.seen == []


@pytest.mark.parametrize("uri", ["ftp://127.0.0.1/mlruns", "gopher://127.0.0.1:70/", "ldap://x/"])
def test_mlflow_uri_must_be_an_mlflow_store(uri):
    from odyssey.tracking.mlflow import check_reachable

    with pytest.raises(OdysseyError, match="tracking.mlflow.uri: the scheme"):
        check_reachable(uri)


@pytest.mark.parametrize("uri", ["sqlite:///mlruns.db", "file:///tmp/mlruns", "mlruns", "databricks"])
def test_mlflow_local_stores_pass_the_check(uri):
    from odyssey.tracking.mlflow import check_reachable

    check_reachable(uri)  # no scheme to refuse and nothing to probe


# ---- redirects from a configured endpoint are not followed ------------------------------------------


def test_judge_does_not_follow_a_redirect(redirector, metadata, monkeypatch):
    """Before: the openai client followed the 307 to the 'metadata' server (and the judge read its answer)."""
    from odyssey.align.judge import EndpointJudge

    monkeypatch.setenv("JUDGE_KEY", "sk-secret")
    judge = EndpointJudge(redirector.url + "/v1", "m", api_key_env="JUDGE_KEY")
    with pytest.raises(Unavailable, match="the judge endpoint failed"):
        judge("Which is better? A or B")
    assert [s[:2] for s in redirector.seen] == [("POST", "/v1/chat/completions")]
    assert metadata.seen == []


def test_openai_engine_does_not_follow_a_redirect(redirector, metadata, monkeypatch):
    from odyssey.engines import open_engine
    from odyssey.spec import EvaluateSpec

    monkeypatch.delenv("ODYSSEY_ENGINE")
    spec = EvaluateSpec(engine="openai", openai={"base_url": redirector.url + "/v1"})
    with pytest.raises(Unavailable, match="answered 307 .a redirect to .* which is not followed"):
        open_engine("tiny:llama", evaluate=spec, quiet=True)
    assert metadata.seen == [] and len(redirector.seen) == 1


def test_mlflow_probe_does_not_follow_a_redirect(redirector, metadata):
    from odyssey.tracking.mlflow import check_reachable

    check_reachable(redirector.url)  # something answers: MLflow's own calls report what is wrong
    assert [s[1] for s in redirector.seen] == ["/health"] and metadata.seen == []


# ---- a document list that names URLs ----------------------------------------------------------------


def odyssey(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    return subprocess.run(
        [sys.executable, "-m", "odyssey.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("path", ["/latest/meta-data/doc.md", "/docs/"])
def test_rag_ingest_of_a_url_fetches_nothing(tmp_path, metadata, path):
    root = tiny_project(tmp_path / "proj")
    proc = odyssey("rag", "ingest", metadata.url + path, "-p", str(root))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "is a URL; odyssey rag ingest reads local files only" in proc.stderr and "Traceback" not in proc.stderr
    (root / "odyssey.yaml").write_text(
        (root / "odyssey.yaml").read_text() + f"augment:\n  documents: file:///etc/{path}\n"
    )
    proc = odyssey("rag", "ingest", "-p", str(root))
    assert proc.returncode == 2 and "augment.documents: file:///etc/" in proc.stderr, proc.stderr[-2000:]
    assert metadata.seen == []


def test_links_inside_documents_are_never_fetched(tmp_path, metadata):
    """HTML images, frames, stylesheets and scripts and Markdown images are text to index, not requests."""
    from odyssey.augment.api import ingest
    from odyssey.project import Project

    root = tiny_project(tmp_path / "proj")
    docs = root / "docs"
    docs.mkdir()
    url = metadata.url + "/latest/meta-data/iam"
    (docs / "page.html").write_text(
        f'<html><head><link rel="stylesheet" href="{url}/a.css"><script src="{url}/a.js"></script></head>'
        f'<body><h1>Refunds</h1><p>Refunds take five days.</p><img src="{url}/i.png">'
        f'<iframe src="{url}/frame"></iframe><object data="{url}/o"></object></body></html>'
    )
    (docs / "note.md").write_text(f"# Shipping\n\nShipping is free. ![map]({url}/map.png)\n\n[more]({url})\n")
    report = ingest(Project.load(root), [docs])
    assert sorted(report.added) == ["docs/note.md", "docs/page.html"] and report.total_chunks >= 2
    assert metadata.seen == []
