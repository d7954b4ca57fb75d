"""Schemathesis fuzzes every operation of the served OpenAPI document, with a valid key and with
none, stateful links included (an answer's id -> feedback on it): no 5xx, every status code and content type documented, responses that match their schema,
405 for undeclared methods, auth that cannot be skipped, and no stack trace in any body (the
``no_stack_trace`` check in st_hooks.py). On a tiny model each pass takes seconds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.deploy.conftest import make_project, start_server, stop_server

CLI = Path(sys.executable).with_name("schemathesis")
CLI = str(CLI) if CLI.exists() else shutil.which("schemathesis")
HERE = Path(__file__).parent

# Every conformance check, plus our own. Not positive_data_acceptance / negative_data_rejection:
# some rules are beyond a JSON schema (a feedback item must say what kind it is, a prompt must fit
# max_prompt_tokens in *tokens*, the body must fit max_request_bytes before any maxLength applies).
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,unsupported_method,missing_required_header,allow_header_conformance,"
    "ignored_auth,no_stack_trace"
)

pytestmark = pytest.mark.skipif(CLI is None, reason="pip install schemathesis")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, _odyssey_home):
    """A server of its own: the fuzzer writes feedback and decides queued pairs."""
    from odyssey.deploy.keys import create_key
    from odyssey.project import Project

    root = make_project(
        tmp_path_factory.mktemp("fuzz") / "proj",
        "deploy:\n  max_tokens: 32\n  default_max_tokens: 8\n  max_request_bytes: 20000\n",
    )
    key = create_key(
        Project.load(root).store, "fuzz", ["inference", "feedback"], rate_limit_rpm=1_000_000, max_concurrency=64
    ).key
    proc, url = start_server(root, ["--candidate", "tiny-a"], root / "serve.log")
    yield url, key
    stop_server(proc)


def fuzz(url: str, header: str) -> str:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks", "PYTHONPATH": str(HERE)}
    cmd = [
        CLI,
        "run",
        url + "/openapi.json",
        "--checks",
        CHECKS,
        "-H",
        header,
        "--max-examples",
        "10",
        "--request-timeout",
        "60",
        "--generation-deterministic",
        "--no-color",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=HERE)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-6000:]
    return report


@pytest.mark.parametrize("who", ["key", "no key"])
def test_fuzz_every_operation(fuzzed, who):
    url, key = fuzzed
    report = fuzz(url, f"Authorization: Bearer {key}" if who == "key" else "X-Nobody: 1")
    operations = sum(len(ops) for ops in httpx.get(url + "/openapi.json").json()["paths"].values())
    assert re.search(rf"Selected: {operations}/{operations}\b", report) and f"Tested: {operations}" in report
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated and generated.group(1) == generated.group(2) and int(generated.group(1)) > 100, report[-2000:]
    if who == "key":  # the links (an answer's id -> feedback) drive the stateful phase
        assert re.search(r"✅ Stateful", report), report[-2000:]


def test_undeclared_methods_are_405_with_allow(fuzzed):
    url, key = fuzzed
    h = {"Authorization": f"Bearer {key}"}
    for method, path in (
        ("DELETE", "/v1/models"),
        ("PUT", "/v1/chat/completions"),
        ("PATCH", "/health"),
        ("GET", "/v1/chat/completions"),
        ("DELETE", "/metrics"),
    ):
        for headers in (h, {}):
            r = httpx.request(method, url + path, headers=headers)
            assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed", (method, path)
            assert r.headers.get("allow")
