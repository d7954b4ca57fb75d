"""A real MLflow tracking server (SQLite backend, artifacts proxied) on 127.0.0.1, started once per module."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="the tracking extra is not installed: pip install 'llm-odyssey[tracking]'")

SERVER_START_S = 180  # on 2 busy cores the server's first start (migrations, imports) takes ~30 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """The URI of a fresh ``mlflow server``; stopped (its whole process group) after the module."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [
            str(mlflow_cli),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server, its uvicorn worker and its job runner
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a child that outlived the server
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
