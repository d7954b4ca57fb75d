"""GGUF: export through llama.cpp's converter and quantizer (merged LoRA included) and measurement
on llama.cpp. Slow: they use the packaged SmolLM2; the export also needs the built llama-quantize."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_project

pytestmark = pytest.mark.slow
MODEL = "packaged:smollm2-135m-instruct"
SMALL = {
    "split": "test",
    "limit": 2,
    "batch_size": 2,
    "speed_prompt_tokens": 32,
    "speed_new_tokens": 4,
    "speed_batch": 2,
    "threads": None,
}


@pytest.fixture
def project(tmp_path):
    from odyssey.project import Project

    root = tiny_project(tmp_path / "p", model=MODEL)
    spec = (
        (root / "odyssey.yaml")
        .read_text()
        .replace("generation: {max_new_tokens: 60}", "generation: {max_new_tokens: 8}")
    )
    (root / "odyssey.yaml").write_text(spec)
    return Project.load(root)


def test_measure_a_gguf_on_llama_cpp(project):
    from odyssey.models import PACKAGED
    from odyssey.optimize.common import resolve_parent
    from odyssey.optimize.measure import measure_model, measure_paired

    path = PACKAGED["smollm2-135m-instruct"].weights_file()
    parent = resolve_parent(project, MODEL)
    m = measure_model(project, str(path), parent.prompt, settings=SMALL)
    assert m["backend"] == "llama.cpp" and m["size_mb"] == pytest.approx(path.stat().st_size / 1e6)
    assert m["prefill_tok_s"] > m["decode_tok_s"] > 0 and m["decode_tok_s_batched"] is None
    assert m["n_examples"] == 2 and all(r["prediction"] for r in m["rows"])
    assert 0 <= m["metrics"]["rougeL"] <= 1 and m["p95_latency_ms"] >= m["p50_latency_ms"] > 0
    # the paired decode test with a llama.cpp candidate and a transformers parent, in one process
    paired = measure_paired(project, MODEL, str(path), parent.prompt, settings={**SMALL, "paired_rounds": 2})
    assert paired["rounds"] == 2
    assert all(v > 0 for v in paired["parent_decode_tok_s"] + paired["candidate_decode_tok_s"])


def test_gguf_export_of_a_merged_lora_candidate(project, tmp_path):
    import torch
    from llama_cpp import Llama
    from peft import LoraConfig, get_peft_model

    from odyssey.models import load
    from odyssey.optimize import quantize

    # A LoRA adapter with non-zero weights, saved the way `odyssey finetune` saves one.
    base = load(MODEL, dtype="float32")
    torch.manual_seed(0)
    peft = get_peft_model(base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft.save_pretrained(adapter)
    base.tokenizer.save_pretrained(adapter)
    (adapter / "odyssey-adapter.json").write_text(json.dumps({"base": MODEL, "method": "lora"}))
    parent = project.store.upsert_candidate(
        "smollm2:lora",
        "adapt",
        str(adapter),
        {"prompt": {"task": "summarization", "instruction": "Summarize the dialogue."}},
    )
    assert parent

    q4 = quantize(project, "gguf:q4_k_m", start_from="smollm2:lora", measure=False)
    # llama.cpp stores SmolLM2's 576-wide rows at q5_0 under q4_k_m; a 4-bit fallback gets under 30 %.
    assert 0.30 < q4.extra["size_ratio_vs_f16"] <= 0.42
    q4_small = quantize(project, "gguf:q4_k_m", start_from="smollm2:lora", measure=False, gguf_fallback="q4_0")
    assert q4_small.candidate.endswith("gguf-q4-k-m-q4-0")
    assert q4_small.extra["size_ratio_vs_f16"] <= 0.30
    small_logits = Llama(model_path=q4_small.model_ref, n_ctx=64, verbose=False, logits_all=True)
    small_logits.eval(small_logits.tokenize(b"Hello"))
    assert torch.isfinite(torch.tensor(small_logits.scores[small_logits.n_tokens - 1])).all()
    plain = quantize(project, "gguf:q8_0", start_from=MODEL, measure=False)
    merged = quantize(project, "gguf:q8_0", start_from="smollm2:lora", measure=False, name="lora-q8")

    def last_logits(path):
        llm = Llama(model_path=path, n_ctx=256, verbose=False, logits_all=True)
        llm.eval(llm.tokenize(b"The meeting is moved to"))
        return torch.tensor(llm.scores[llm.n_tokens - 1])

    a, b = last_logits(plain.model_ref), last_logits(merged.model_ref)
    assert (a - b).abs().max() > 0.1  # the adapter's weights are in the exported file
    assert project.store.candidate("lora-q8")["parent_id"] == project.store.candidate("smollm2:lora")["id"]
