"""SIGTERM under load loses nothing: every answer a client received is in the store, and every
request the server accepted was answered (uvicorn drains in-flight requests, then the capture
queue is flushed)."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time

import httpx
import pytest

from tests.deploy.conftest import make_project, start_server, stop_server


@pytest.mark.slow  # a second server and a minute of load (~100 s on 2 busy cores)
def test_sigterm_under_load_loses_no_record(tmp_path):
    from odyssey.deploy.keys import create_key
    from odyssey.project import Project
    from odyssey.store import deploy as sd

    root = make_project(tmp_path / "proj")
    key = create_key(Project.load(root).store, "load").key
    proc, url = start_server(root, ["--candidate", "tiny-a"], tmp_path / "serve.log")
    headers = {"Authorization": f"Bearer {key}"}
    received: list[str] = []
    lock = threading.Lock()
    stop_sending = threading.Event()

    def client(i: int):
        n = 0
        with httpx.Client(timeout=60) as http:
            while not stop_sending.is_set():
                body = {
                    "model": "tiny-a",
                    "messages": [{"role": "user", "content": f"client {i} turn {n}"}],
                    "max_tokens": 24,
                    "temperature": 0,
                    "stream": bool(i % 2),
                }
                try:
                    if body["stream"]:
                        with http.stream("POST", url + "/v1/chat/completions", headers=headers, json=body) as r:
                            if r.status_code != 200:
                                continue
                            rid = r.headers["x-request-id"]
                            lines = [line for line in r.iter_lines() if line.startswith("data:")]
                            if lines and lines[-1] == "data: [DONE]":
                                with lock:
                                    received.append(rid)
                    else:
                        r = http.post(url + "/v1/chat/completions", headers=headers, json=body)
                        if r.status_code == 200:
                            with lock:
                                received.append(r.json()["id"])
                except httpx.HTTPError:
                    return  # the server stopped accepting: this client is done
                n += 1

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(client, i) for i in range(12)]
        deadline = time.monotonic() + 60
        while len(received) < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # mid-load: requests are in flight right now
        code = proc.wait(120)
        stop_sending.set()
        for f in futures:
            f.result()
    assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]  # a clean drain is a clean exit
    assert len(received) >= 12
    project = Project.load(root)
    rows = {r["request_id"]: r for r in sd.requests(project.store)}
    lost = [rid for rid in received if rid not in rows]
    assert lost == []
    assert all(rows[rid]["status"] == 200 and rows[rid]["output"] is not None for rid in received)
    # the deploy run was closed cleanly with the count in its summary
    run = project.store.runs("deploy")[0]
    assert run["status"] == "succeeded" and run["summary"]["requests_captured"] == len(rows)
    stop_server(proc)
