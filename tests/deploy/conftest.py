"""A real `odyssey serve` in a subprocess on 127.0.0.1 and a free port, shared by the deploy tests.

The project is the shipped summarization example with two stored candidates on tiny random
models (tiny:llama, tiny:gpt2), so compare has two models; keys are made through the Python API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import tiny_project

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    url: str
    root: Path
    keys: dict[str, str]
    proc: subprocess.Popen
    log: Path
    extra: dict = field(default_factory=dict)

    def headers(self, who: str = "alice") -> dict:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def project(self):
        from odyssey.project import Project

        return Project.load(self.root)


def free_port() -> int:
    from odyssey.deploy.backends import free_port as fp

    return fp()


def make_project(root: Path, deploy_yaml: str = "") -> Path:
    tiny_project(root)
    if deploy_yaml:
        spec = (root / "odyssey.yaml").read_text()
        (root / "odyssey.yaml").write_text(spec + "\n" + deploy_yaml)
    from odyssey.project import Project
    from odyssey.prompts import PromptConfig

    project = Project.load(root)
    cfg = PromptConfig.default("summarization").as_dict()
    project.store.upsert_candidate("tiny-a", "prompt", "tiny:llama", {"prompt": cfg})
    project.store.upsert_candidate("tiny-b", "prompt", "tiny:gpt2", {"prompt": cfg})
    return root


def start_server(
    root: Path, args: list[str], log: Path, timeout: float = 240, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    env = {**os.environ, "ODYSSEY_QUIET": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "odyssey.cli", "serve", "-p", str(root), "--port", str(port), *args]
    proc = subprocess.Popen(
        cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
    )  # its own group: a hung server is killed with its children
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"odyssey serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"odyssey serve did not start in {timeout} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory, _odyssey_home):
    from odyssey.deploy.keys import create_key
    from odyssey.project import Project

    root = make_project(
        tmp_path_factory.mktemp("deploy") / "proj",
        "deploy:\n  max_tokens: 64\n  default_max_tokens: 16\n  max_request_bytes: 20000\n",
    )
    store = Project.load(root).store
    keys = {
        "alice": create_key(store, "alice").key,
        "reader": create_key(store, "reader", ["feedback"]).key,
        "slow": create_key(store, "slow", rate_limit_rpm=2).key,
        "narrow": create_key(store, "narrow", max_concurrency=1).key,
        "revoked": create_key(store, "gone").key,
    }
    from odyssey.deploy.keys import revoke

    revoke(store, "gone")
    store.close()
    log = root / "serve.log"
    proc, url = start_server(root, ["--candidate", "tiny-a", "--candidate", "tiny-b"], log)
    yield Server(url, root, keys, proc, log)
    stop_server(proc)
