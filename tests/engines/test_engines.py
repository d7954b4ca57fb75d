"""The engine layer: parity of llama.cpp with the transformers reference, LoRA through llama.cpp,
the openai engine against a real `odyssey serve`, and clear errors before any work starts.

llama.cpp tests need the llama-server that scripts/setup.sh builds (they skip without it: a test
never starts a minutes-long build); the GGUF conversion of a tiny model takes a second.
"""

from __future__ import annotations

import json
import os

import pytest

from odyssey.engines import open_engine, requested_engine
from odyssey.errors import MissingDependency, OdysseyError, Unavailable


def _llama_server_built() -> bool:
    from odyssey.models import llamacpp

    try:
        return llamacpp.available("llama-server")
    except OdysseyError:
        return False


needs_llama_server = pytest.mark.skipif(
    not _llama_server_built(),
    reason="llama-server is not built (scripts/setup.sh builds it; or `odyssey optimize tools`)",
)

PROMPTS = [
    "#Person1#: Hi, how are you? #Person2#: Fine, thanks.",
    "Summarize: the cat sat on the mat.",
    "#Person1#: Where is the station?",
    "Once upon a time",
    "The meeting moved to Friday because",
]


def _render(engine, texts):
    """Plain continuation prompts: the tiny random model answers its chat template with whitespace
    only, which would make every comparison trivially equal."""
    return list(texts)


def test_transformers_memory_is_the_candidates_not_the_process():
    """peak_rss_gb counts the model's weights plus what generating added, not what the process held
    before (a pipeline's process has trained other models: an int8 candidate once read 6.4 GB)."""
    from odyssey.engines.transformers import weight_gb
    from odyssey.models.memory import rss_gb

    ballast = b"\x01" * (512 * 1024**2)  # memory this process holds (and has touched) for other reasons
    with open_engine("tiny:llama", engine="transformers", quiet=True) as ref:
        _, stats = ref.generate(PROMPTS, {"max_new_tokens": 8})
        weights = weight_gb(ref.loaded.model)
        n_params = ref.n_params
    assert weights * 1024**3 == pytest.approx(4 * n_params, rel=0.05)  # fp32: 4 bytes a parameter
    assert weights <= stats["peak_rss_gb"] < weights + 0.25 < rss_gb() - 0.5
    del ballast


@needs_llama_server
def test_llamacpp_greedy_tokens_equal_transformers_on_a_tiny_model():
    settings = {"max_new_tokens": 16}
    with open_engine("tiny:llama", engine="transformers", quiet=True) as ref:
        prompts = _render(ref, PROMPTS)
        expected, _ = ref.generate(prompts, settings)
    with open_engine("tiny:llama", engine="llamacpp", quiet=True) as fast:
        got, stats = fast.generate(prompts, settings)
        assert fast.info.details["how"].startswith("converted to GGUF (f32)")
    assert stats["engine"] == "llamacpp" and stats["new_tokens"] == sum(g.new_tokens for g in got) > 0
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]
    assert [g.text for g in got] == [e.text for e in expected]
    assert any(g.text for g in got)  # real text, not only whitespace that strips to ""


@needs_llama_server
def test_gguf_is_converted_once_and_cached_by_content(tmp_path):
    from odyssey.engines.gguf import gguf_for

    first, _ = gguf_for("tiny:llama")
    mtime = first.stat().st_mtime_ns
    again, _ = gguf_for("tiny:llama")
    assert again == first and again.stat().st_mtime_ns == mtime


def _lora_candidate(tmp_path):
    """A LoRA adapter on tiny:llama with non-zero B, so it really changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model

    from odyssey.models import load

    base = load("tiny:llama")
    torch.manual_seed(3)
    model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = tmp_path / "lora"
    model.save_pretrained(out)
    base.tokenizer.save_pretrained(out)
    (out / "odyssey-adapter.json").write_text(json.dumps({"base": "tiny:llama"}))
    return out


@needs_llama_server
def test_lora_candidate_through_llamacpp_matches_transformers(tmp_path):
    lora = _lora_candidate(tmp_path)
    settings = {"max_new_tokens": 12}
    with open_engine(str(lora), engine="transformers", quiet=True) as ref:
        prompts = _render(ref, PROMPTS)
        expected, _ = ref.generate(prompts, settings)
    with open_engine("tiny:llama", engine="transformers", quiet=True) as base:
        plain, _ = base.generate(prompts, settings)
    assert [e.text for e in expected] != [p.text for p in plain]  # the adapter matters
    with open_engine(str(lora), engine="llamacpp", quiet=True) as fast:
        assert fast.info.details["how"].startswith("LoRA merged into its base")
        got, _ = fast.generate(prompts, settings)
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]
    assert [g.text for g in got] == [e.text for e in expected]


@needs_llama_server
def test_stop_strings_cut_the_same_in_both_engines():
    settings = {"max_new_tokens": 24}
    with open_engine("tiny:llama", engine="transformers", quiet=True) as ref:
        prompts = _render(ref, PROMPTS[:3])
        free, _ = ref.generate(prompts, settings)
        stop = free[0].text[3:6]  # a piece of an answer, past its start
        cut, _ = ref.generate(prompts, {**settings, "stop": [stop]})
    with open_engine("tiny:llama", engine="llamacpp", quiet=True) as fast:
        got, _ = fast.generate(prompts, {**settings, "stop": [stop]})
    assert [g.text for g in got] == [c.text for c in cut]
    assert any(stop not in c.text and stop in f.text for c, f in zip(cut, free))


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(OdysseyError, match="unknown engine 'llamacp'.*did you mean 'llamacpp'"):
        requested_engine("llamacp")


def test_engine_precedence_flag_then_environment_then_spec(monkeypatch):
    from odyssey.spec import EvaluateSpec

    spec = EvaluateSpec(engine="llamacpp")
    monkeypatch.delenv("ODYSSEY_ENGINE", raising=False)
    assert requested_engine(None, spec) == "llamacpp"
    monkeypatch.setenv("ODYSSEY_ENGINE", "openai")
    assert requested_engine(None, spec) == "openai"
    assert requested_engine("transformers", spec) == "transformers"


def test_vllm_without_cuda_is_a_clear_error_before_any_work():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(MissingDependency, match="vllm"):
        open_engine("tiny:llama", engine="vllm", quiet=True)


def _soft_prompt_candidate(tmp_path):
    from peft import PromptTuningConfig, get_peft_model

    from odyssey.models import load

    base = load("tiny:llama")
    model = get_peft_model(base.model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    out = tmp_path / "soft"
    model.save_pretrained(out)
    (out / "odyssey-adapter.json").write_text(json.dumps({"base": "tiny:llama"}))
    return out


def test_soft_prompt_on_llamacpp_is_refused_and_auto_falls_back(tmp_path, monkeypatch):
    from odyssey.engines.gguf import CannotRun

    soft = _soft_prompt_candidate(tmp_path)
    if _llama_server_built():
        with pytest.raises(CannotRun, match="soft-prompt"):
            open_engine(str(soft), engine="llamacpp", quiet=True)
    monkeypatch.delenv("ODYSSEY_ENGINE", raising=False)
    with open_engine(str(soft), engine="auto", quiet=True) as engine:
        assert engine.name == "transformers"
        assert "soft-prompt" in engine.info.reason or "llama-server" in engine.info.reason
        answers, _ = engine.generate(["hello"], {"max_new_tokens": 3})
        assert len(answers) == 1


def test_unreachable_openai_endpoint_fails_before_any_work(monkeypatch):
    from odyssey.engines.process import free_port
    from odyssey.spec import EvaluateSpec

    monkeypatch.delenv("ODYSSEY_ENGINE")  # the spec's engine: openai
    spec = EvaluateSpec(engine="openai", openai={"base_url": f"http://127.0.0.1:{free_port()}/v1"})
    with pytest.raises(Unavailable, match="unreachable"):
        open_engine("tiny:llama", evaluate=spec, quiet=True)
    with pytest.raises(OdysseyError, match="base_url is not set"):
        open_engine("tiny:llama", evaluate=EvaluateSpec(engine="openai"), quiet=True)


def test_openai_engine_against_odyssey_serve_gives_the_reference_answers(tmp_path):
    """`odyssey serve` (transformers backend, greedy) started here; the openai engine sends the
    rendered prompts to its /v1/completions, and the answers equal the local reference's."""
    from odyssey.deploy.keys import create_key
    from odyssey.project import Project
    from odyssey.spec import EvaluateSpec
    from tests.deploy.conftest import make_project, start_server, stop_server

    root = make_project(tmp_path / "proj")
    store = Project.load(root).store
    key = create_key(store, "engine-test").key
    store.close()
    proc, url = start_server(root, ["--candidate", "tiny-a", "--backend", "transformers"], tmp_path / "serve.log")
    try:
        os.environ["ODYSSEY_TEST_ENGINE_KEY"] = key
        spec = EvaluateSpec(
            engine="openai",
            openai={
                "base_url": url + "/v1",
                "api_key_env": "ODYSSEY_TEST_ENGINE_KEY",
                "model": "tiny-a",
                "concurrency": 2,
            },
        )
        settings = {"max_new_tokens": 10}
        with open_engine("tiny:llama", engine="transformers", quiet=True) as ref:
            prompts = _render(ref, PROMPTS[:3])
            expected, _ = ref.generate(prompts, settings)
        with open_engine("tiny:llama", evaluate=spec, engine="openai", quiet=True) as remote:
            assert remote.name == "openai"
            got, stats = remote.generate(prompts, settings)
        assert [g.text for g in got] == [e.text for e in expected]
        assert stats["new_tokens"] > 0
    finally:
        os.environ.pop("ODYSSEY_TEST_ENGINE_KEY", None)
        stop_server(proc)
