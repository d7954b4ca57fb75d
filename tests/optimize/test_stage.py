"""The optimize stage end to end on a tiny model: candidates linked to parents, the measurement
harness, the report with gates and the Pareto plot, bad requests refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from odyssey.errors import OdysseyError  # noqa: E402
from tests.conftest import tiny_project  # noqa: E402

OPTIMIZE = """
optimize:
  start_from: tiny:llama
  measure: {limit: 2, speed_prompt_tokens: 16, speed_new_tokens: 4, speed_batch: 2, batch_size: 2, isolate: false,
            paired_rounds: 3}
  distill: {steps: 2, batch_size: 2, max_length: 96, cache_top_k: 8}
  prune: {calibration_examples: 4, max_length: 96, recover_batch_size: 2, recover_lora_r: 4}
"""


@pytest.fixture
def project(tmp_path):
    from odyssey.project import Project

    root = tiny_project(tmp_path / "p")
    spec = (
        (root / "odyssey.yaml")
        .read_text()
        .replace("generation: {max_new_tokens: 60}", "generation: {max_new_tokens: 6}")
    )
    (root / "odyssey.yaml").write_text(spec + OPTIMIZE)
    return Project.load(root)


def _logits(ref, ids):
    from odyssey.models import load

    with torch.no_grad():
        return load(ref).model(input_ids=ids).logits


def test_int8_candidate_is_linked_to_its_parent_and_loads(project):
    from odyssey.models import load
    from odyssey.optimize import quantize

    result = quantize(project, "int8", measure=False)
    store = project.store
    cand = store.candidate(result.candidate)
    parent = store.candidate(result.parent)
    assert cand["stage"] == "optimize" and cand["parent_id"] == parent["id"]
    assert result.method == cand["config"]["optimize"]["method"] == "int8-x86"  # this CPU has the x86 engine
    assert cand["config"]["prompt"] == parent["config"]["prompt"]
    meta = json.loads(open(os.path.join(result.model_ref, "odyssey-int8.json")).read())
    assert meta["engine"] == "x86" and meta["smoothing_alpha"] == 0.5  # calibrated on the train split
    assert meta["smoothing_folded"] == len(meta["layers"]) and meta["smoothing_runtime"] == 0  # a Llama: all folded
    # the tiny model's fp32 embeddings are most of its bytes; every linear weight shrank 4x
    assert result.size_mb < 0.8 * result.parent_size_mb
    ids = torch.tensor([[1, 40, 41, 300, 7, 9]])
    base, q = _logits("tiny:llama", ids), _logits(result.model_ref, ids)
    rel = (q - base).norm() / base.norm()
    assert 0 < rel < 0.1  # quantized: close to, but not the same as, the fp32 model
    loaded = load(result.model_ref)
    assert loaded.n_params == load("tiny:llama").n_params  # the packed int8 weights are counted
    out = loaded.model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 10)
    with pytest.raises(OdysseyError, match="already quantized"):
        quantize(project, "int8", start_from=result.candidate, measure=False)


def test_int8_x86_weights_round_trip_exactly(tmp_path):
    """Saved int8 values, scales and smoothing scales come back bit for bit; every linear layer is int8."""
    from odyssey.models import load, x86_int8

    fp32 = load("tiny:llama")
    ids = torch.tensor([[1, 40, 41, 300, 7, 9]])
    stats = x86_int8.activation_absmax(fp32.model, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}])
    out = x86_int8.save(fp32.model, fp32.tokenizer, tmp_path / "int8", act_absmax=stats, alpha=0.5)
    back = load(str(out)).model
    names = [n for n, m in fp32.model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert names and set(stats) == set(names)
    for name in names:
        layer = back.get_submodule(name)
        assert isinstance(layer, x86_int8.Int8Linear)  # smoothed at run time: no shared-input groups
        s = x86_int8.smoothing_scale(stats[name], fp32.model.get_submodule(name).weight, 0.5)
        q, scale = x86_int8.quantize_weight(fp32.model.get_submodule(name).weight, s)
        stored_q, stored_scale = layer.int8_weight()
        assert torch.equal(stored_q, q) and torch.allclose(stored_scale, scale) and torch.equal(layer.input_scale, s)
    with torch.no_grad():
        a, b = fp32.model(input_ids=ids).logits, back(input_ids=ids).logits
    assert 0 < float((a - b).norm() / a.norm()) < 0.1


def test_folded_smoothing_keeps_the_function():
    """Smoothing folded into norms / up_proj / v_proj leaves the fp32 model's logits unchanged."""
    import copy

    from odyssey.models import load, x86_int8

    fp32 = load("tiny:llama").model
    ids = torch.tensor([[1, 40, 41, 300, 7, 9, 12, 60]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    stats = x86_int8.activation_absmax(fp32, [batch])
    stats = {k: v * torch.linspace(1, 50, v.numel()) for k, v in stats.items()}  # uneven channels: scales != 1
    folded, done = x86_int8.smooth_and_check(fp32, stats, 0.5, batch)
    assert len(done) == 2 * 7 + 1 and folded is not fp32
    with torch.no_grad():
        ref = fp32(input_ids=ids).logits
        assert torch.allclose(folded(input_ids=ids).logits, ref, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(folded.model.norm.weight, fp32.model.norm.weight)  # the scales went somewhere
        assert torch.equal(fp32.get_input_embeddings().weight, folded.get_input_embeddings().weight)  # untied
        int8 = copy.deepcopy(folded)
        x86_int8.quantize_model(int8)
        rel = float((int8(input_ids=ids).logits - ref).norm() / ref.norm())
        assert 0 < rel < 0.1


def test_int8_linear_smoothing_tames_an_outlier_channel():
    """One input channel 100x the others: per-call int8 activations lose the small channels unless
    smoothing moves the outlier into the weight. Prompts (many rows) use the dequantized weight exactly."""
    from odyssey.models import x86_int8

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=True)
    x = torch.randn(1, 64)
    x[:, 3] *= 100
    with torch.no_grad():
        ref = linear(x)
        plain = x86_int8.Int8Linear.from_linear(linear)
        smooth = x86_int8.Int8Linear.from_linear(linear, x86_int8.smoothing_scale(x.abs()[0], linear.weight, 0.5))
        err_plain = float((plain(x) - ref).norm() / ref.norm())
        err_smooth = float((smooth(x) - ref).norm() / ref.norm())
        assert err_smooth < err_plain / 2 and err_smooth < 0.02
        many = torch.randn(40, 64)  # > INT8_ROWS rows: fp32 product on the dequantized weight
        q, scale = plain.int8_weight()
        exact = torch.nn.functional.linear(many, q.float() * scale[:, None], linear.bias)
        assert torch.allclose(plain(many), exact, atol=1e-5)


def test_bad_requests_fail_before_any_run(project):
    from odyssey.optimize import distill, prune, quantize

    if not torch.cuda.is_available():
        with pytest.raises(OdysseyError, match="GPU"):
            quantize(project, "bnb-nf4")
    with pytest.raises(OdysseyError, match="sparsity"):
        prune(project, sparsity=1.5)
    with pytest.raises(OdysseyError, match="not smaller"):
        distill(project, student_layers=2)
    with pytest.raises(OdysseyError, match="no candidate or model named"):
        quantize(project, "int8", start_from="no-such-candidate")
    assert project.store.runs("optimize") == []


def test_measure_record_and_report(project):
    from odyssey.optimize import prune, quantize, report
    from odyssey.store.optimize import measurements

    q = quantize(project, "int8")
    child, parent = q.measurement["candidate"], q.measurement["parent"]
    for m in (child, parent):
        # >= for the load: a tiny model's few hundred KB can land in pages the process already holds.
        assert m["size_mb"] > 0 and m["peak_rss_gb"] >= m["load_rss_gb"] >= m["base_rss_gb"] > 0
        assert m["prefill_tok_s"] > 0 and m["decode_tok_s"] > 0 and m["decode_tok_s_batched"] > 0
        assert m["p95_latency_ms"] >= m["p50_latency_ms"] > 0 and m["n_examples"] == 2
        assert set(m["metrics"]) >= {"rouge1", "rouge2", "rougeL"}
    assert q.comparison["size_ratio"] == pytest.approx(child["size_mb"] / parent["size_mb"])
    assert q.comparison["rougeL_change"] == pytest.approx(child["metrics"]["rougeL"] - parent["metrics"]["rougeL"])
    board = project.store.latest_metrics(project.store.candidate(q.candidate)["id"], "test")
    assert board["memory_gb"] == pytest.approx(child["peak_rss_gb"]) and "p95_latency_ms" in board
    # the paired decode test: both models timed in alternating rounds, the median round ratio reported
    paired = q.comparison["paired_speed"]
    assert paired["rounds"] == 3 and len(paired["parent_decode_tok_s"]) == len(paired["candidate_decode_tok_s"]) == 3
    assert paired["round_ratios"] == pytest.approx(
        [c / b for c, b in zip(paired["candidate_decode_tok_s"], paired["parent_decode_tok_s"])]
    )
    assert q.comparison["decode_speedup_paired"] == sorted(paired["round_ratios"])[1] > 0

    p = prune(project, sparsity=0.25, target="mlp")
    assert p.n_params < p.parent_n_params
    assert p.measurement["parent"]["decode_tok_s"] == parent["decode_tok_s"]  # the parent was measured once
    assert len([m for m in measurements(project.store) if m["method"] == "parent"]) == 1

    rep = report(project)
    names = {r["name"]: r for r in rep.rows}
    assert set(names) == {q.parent, q.candidate, p.candidate}
    assert names[p.candidate]["parent"] == q.parent and names[p.candidate]["method"] == "structured-mlp"
    assert any(r["pareto"] for r in rep.rows)
    assert names[q.candidate]["decode_speedup"] == q.comparison["decode_speedup_paired"]
    assert any("alternating rounds" in n for n in rep.notes)
    gate = next(g for g in names[q.candidate]["gates"] if g["metric"] == "rougeL")
    assert gate["passed"] is (names[q.candidate]["metrics"]["rougeL"] >= 0.30)
    assert os.path.getsize(rep.paths["plot"]) > 1000
    assert q.candidate in open(rep.paths["markdown"]).read()


def test_distill_builds_a_half_depth_student_and_resumes(project):
    from odyssey.optimize import distill

    first = distill(project, measure=False)
    assert (first.student_layers, first.teacher_layers) == (1, 2) and first.n_params < first.teacher_n_params
    cand = project.store.candidate(first.candidate)
    assert project.store.candidate(cand["parent_id"])["name"] == first.parent
    assert first.training["steps"] == 2 and all(h["kl"] >= 0 for h in first.training["history"] if "kl" in h)
    cache = list((project.state_dir / "optimize").rglob("teacher-top8-*.safetensors"))
    assert len(cache) == 1
    again = distill(project, steps=3, resume=True, measure=False)
    assert again.training["resumed_from"] == 2 and again.training["steps"] == 3


def test_distill_student_can_keep_the_most_influential_layers(project):
    from odyssey.optimize import distill

    with pytest.raises(OdysseyError, match="student init"):
        distill(project, student_init="random")
    result = distill(project, student_init="block-influence", steps=1, measure=False)
    assert result.candidate.endswith("distilled-1l-bi") and result.student_layers == 1
    info = json.loads(open(os.path.join(os.path.dirname(result.model_ref), "distill.json")).read())
    bi = info["block_influence"]
    assert len(bi) == 2 and bi[0] != bi[1] and info["student_init"] == "block-influence"
    assert info["kept_layers"] == [max(range(2), key=lambda i: bi[i])]


def test_prune_with_lora_recovery(project):
    from odyssey.optimize import prune

    result = prune(project, sparsity=0.5, target="heads", recover_steps=2, measure=False)
    assert result.recovery["steps"] == 2 and result.recovery["final_loss"] > 0
    assert result.n_params < result.parent_n_params
    from odyssey.models import load

    loaded = load(result.model_ref)  # LoRA merged: a plain checkpoint with half the query heads
    assert loaded.model.config.num_attention_heads == 2
    assert not any("lora" in n for n, _ in loaded.model.named_parameters())


def odyssey(*args):
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    return subprocess.run(
        [sys.executable, "-m", "odyssey.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_errors_and_report(project):
    root = str(project.root)
    bad = odyssey("optimize", "prune", "--sparsity", "1.2", "-p", root)
    assert bad.returncode == 2 and "sparsity" in bad.stderr and "Traceback" not in bad.stderr
    if not torch.cuda.is_available():
        gpu = odyssey("optimize", "quantize", "--to", "bnb-int8", "-p", root)
        assert gpu.returncode == 2 and "GPU" in gpu.stderr
    empty = odyssey("optimize", "report", "-p", root, "--json")
    assert empty.returncode == 0
    payload = json.loads(empty.stdout)
    assert payload["rows"] == [] and "nothing measured yet" in payload["notes"][0]


def test_paired_decode_is_off_with_zero_rounds(project):
    from odyssey.optimize.common import resolve_parent
    from odyssey.optimize.measure import compare, measure_paired, settings_for

    parent = resolve_parent(project, "tiny:llama")
    settings = {**settings_for(project), "paired_rounds": 0}
    assert measure_paired(project, "tiny:llama", "tiny:llama", parent.prompt, settings=settings) is None
    assert "decode_speedup_paired" not in compare({"decode_tok_s": 2.0}, {"decode_tok_s": 1.0}, None)


@pytest.mark.slow
def test_isolated_measurement_has_its_own_memory(project):
    from odyssey.optimize.common import resolve_parent
    from odyssey.optimize.measure import measure_model, measure_paired, settings_for

    parent = resolve_parent(project, "tiny:llama")
    settings = {**settings_for(project), "isolate": True}
    m = measure_model(project, "tiny:llama", parent.prompt, settings=settings)
    # a fresh process: its peak is far below this test process's (which has loaded many models by now)
    assert 0 < m["base_rss_gb"] < m["load_rss_gb"] <= m["peak_rss_gb"] < 2
    assert m["n_examples"] == 2 and m["decode_tok_s"] > 0
    paired = measure_paired(project, "tiny:llama", "tiny:llama", parent.prompt, settings=settings)
    assert paired["rounds"] == 3 and all(v > 0 for v in paired["candidate_decode_tok_s"])


@pytest.mark.parametrize("method", ["int8-torchao", "int8-weight-only", "int4"])
def test_other_torchao_methods_load_and_stay_close(project, method):
    from odyssey.optimize import quantize

    result = quantize(project, method, measure=False)
    ids = torch.tensor([[1, 40, 41, 300, 7, 9]])
    base, q = _logits("tiny:llama", ids), _logits(result.model_ref, ids)
    rel = float((q - base).norm() / base.norm())
    assert 0 < rel < (0.5 if method == "int4" else 0.1)  # int4 is coarser than int8
    assert result.size_mb < result.parent_size_mb


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes quantization needs a CUDA GPU")
@pytest.mark.parametrize("method", ["bnb-int8", "bnb-nf4"])
def test_bitsandbytes_on_a_gpu(project, method):
    pytest.importorskip("bitsandbytes")
    from odyssey.optimize import quantize

    result = quantize(project, method, measure=False)
    config = json.loads(open(os.path.join(result.model_ref, "config.json")).read())
    assert config["quantization_config"]["quant_method"] == "bitsandbytes"
    assert result.size_mb < result.parent_size_mb
