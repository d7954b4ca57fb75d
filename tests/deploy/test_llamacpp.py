"""The llama.cpp backend: `odyssey serve` runs llama.cpp's C++ llama-server (-np slots, continuous
batching) as a child process behind the gateway, on the packaged SmolLM2 GGUF."""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import openai
import pytest

from tests.deploy.conftest import make_project, start_server, stop_server


def llama_server_binary() -> Path | None:
    if os.environ.get("ODYSSEY_LLAMA_SERVER"):
        return Path(os.environ["ODYSSEY_LLAMA_SERVER"])
    try:
        from odyssey.models import llamacpp

        # tests run with a temporary ODYSSEY_HOME; tests/conftest.py points ODYSSEY_LLAMACPP_HOME at the
        # user's real build (bin/, or bin-noamx/ on a CPU that lists AMX)
        path = llamacpp.bin_dir() / "llama-server"
    except Exception:
        return None
    return path if path.is_file() else None


BINARY = llama_server_binary()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BINARY is None, reason="llama-server is not built (odyssey.models.llamacpp.tool_path)"),
]


def test_llama_server_backend_batches_streams_and_captures(tmp_path, monkeypatch):
    from odyssey.deploy.keys import create_key
    from odyssey.project import Project
    from odyssey.prompts import PromptConfig
    from odyssey.store import deploy as sd

    root = make_project(tmp_path / "proj", "deploy:\n  parallel: 4\n  context_length: 4096\n")
    project = Project.load(root)
    project.store.upsert_candidate(
        "smol", "prompt", "packaged:smollm2-135m-instruct", {"prompt": PromptConfig.default("summarization").as_dict()}
    )
    key = create_key(project.store, "t").key
    admin = create_key(project.store, "t-admin", ["admin"]).key
    project.store.close()
    monkeypatch.setenv("ODYSSEY_LLAMA_SERVER", str(BINARY))
    proc, url = start_server(root, ["--candidate", "smol", "--backend", "llama.cpp"], tmp_path / "serve.log")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        [model] = client.models.list().data
        assert model.model_extra["backend"] == "llama.cpp" and model.model_extra["parallel"] == 4
        dialogue = (
            "#Person1#: Did you book the flight to Boston?\n#Person2#: Yes, it leaves Friday at nine. "
            "I also reserved a hotel near the harbor."
        )
        msgs = [{"role": "user", "content": dialogue}]
        full = client.chat.completions.create(model="smol", messages=msgs, max_tokens=32, temperature=0)
        text = full.choices[0].message.content
        assert len(text.split()) >= 3 and full.usage.completion_tokens <= 32
        chunks = list(
            client.chat.completions.create(model="smol", messages=msgs, max_tokens=32, temperature=0, stream=True)
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        # Not asserted equal to `text`: llama-server reuses the prompt's KV cache from the first request,
        # computed in another batch shape, and greedy decoding can then pick a different near-tie token.
        assert len(streamed.split()) >= 3
        stream_id = chunks[0].id

        def ask(i):
            return client.chat.completions.create(
                model="smol", messages=[{"role": "user", "content": f"{dialogue} ({i})"}], max_tokens=16, temperature=0
            )

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, range(4)))
        assert all(a.choices[0].message.content for a in answers)
        project = Project.load(root)
        rows = {r["request_id"]: r for r in sd.requests(project.store)}
        for a in [full, *answers]:
            assert rows[a.id]["output"] == a.choices[0].message.content
            assert "Summarize the following dialogue" in rows[a.id]["rendered_prompt"]
        assert rows[stream_id]["output"] == streamed  # the stream's record holds what the client saw
        import httpx

        assert "pid" not in model.model_extra and "upstream" not in model.model_extra  # admin keys only
        [full] = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {admin}"}).json()["data"]
        pid, upstream = full["pid"], full["upstream"]
        # the child answers only with its own random key: a local process cannot bypass the gateway
        bypass = httpx.post(upstream + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
        assert bypass.status_code == 401
    finally:
        stop_server(proc)
    assert not Path(f"/proc/{pid}").exists()  # the llama-server child went down with the gateway


def test_kill_9_of_odyssey_serve_leaves_no_llama_server_orphan(tmp_path, monkeypatch):
    import signal
    import time

    import httpx
    import psutil

    from odyssey.deploy.keys import create_key
    from odyssey.project import Project

    root = make_project(tmp_path / "proj", "deploy:\n  parallel: 2\n  context_length: 2048\n")
    project = Project.load(root)
    project.store.upsert_candidate("smol", "prompt", "packaged:smollm2-135m-instruct", {})
    admin = create_key(project.store, "root", ["admin"]).key
    project.store.close()
    monkeypatch.setenv("ODYSSEY_LLAMA_SERVER", str(BINARY))
    proc, url = start_server(root, ["--candidate", "smol", "--backend", "llama.cpp"], tmp_path / "serve.log")
    try:
        [full] = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {admin}"}).json()["data"]
        child = psutil.Process(full["pid"])
        assert child.is_running()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 15
        while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE  # kill9_orphans: 0
    finally:
        stop_server(proc)
