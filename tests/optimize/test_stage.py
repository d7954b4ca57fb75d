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
  measure: {limit: 2, speed_prompt_tokens: 16, speed_new_tokens: 4, speed_batch: 2, batch_size: 2, isolate: false}
  distill: {steps: 2, batch_size: 2, max_length: 96, cache_top_k: 8}
  prune: {calibration_examples: 4, max_length: 96, recover_batch_size: 2, recover_lora_r: 4}
"""


@pytest.fixture
def project(tmp_path):
    from odyssey.project import Project

    root = tiny_project(tmp_path / "p")
    spec = (root / "odyssey.yaml").read_text().replace("generation: {max_new_tokens: 60}", "generation: {max_new_tokens: 6}")
    (root / "odyssey.yaml").write_text(spec + OPTIMIZE)
    return Project.load(root)


def _logits(ref, ids):
    from odyssey.models import load

    with torch.no_grad():
        return load(ref).model(input_ids=ids).logits


def test_int8_candidate_is_linked_to_its_parent_and_loads(project):
    from odyssey.optimize import quantize

    result = quantize(project, "int8", measure=False)
    store = project.store
    cand = store.candidate(result.candidate)
    parent = store.candidate(result.parent)
    assert cand["stage"] == "optimize" and cand["parent_id"] == parent["id"]
    assert cand["config"]["optimize"]["method"] == "int8" and cand["config"]["prompt"] == parent["config"]["prompt"]
    config = json.loads((result.model_ref and open(os.path.join(result.model_ref, "config.json")).read()))
    assert config["quantization_config"]["quant_method"] == "torchao"
    assert result.size_mb < 0.75 * result.parent_size_mb
    ids = torch.tensor([[1, 40, 41, 300, 7, 9]])
    base, q = _logits("tiny:llama", ids), _logits(result.model_ref, ids)
    rel = (q - base).norm() / base.norm()
    assert 0 < rel < 0.1  # quantized: close to, but not the same as, the fp32 model
    with pytest.raises(OdysseyError, match="already quantized"):
        quantize(project, "int8", start_from=result.candidate, measure=False)


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

    p = prune(project, sparsity=0.25, target="mlp")
    assert p.n_params < p.parent_n_params
    assert p.measurement["parent"]["decode_tok_s"] == parent["decode_tok_s"]  # the parent was measured once
    assert len([m for m in measurements(project.store) if m["method"] == "parent"]) == 1

    rep = report(project)
    names = {r["name"]: r for r in rep.rows}
    assert set(names) == {q.parent, q.candidate, p.candidate}
    assert names[p.candidate]["parent"] == q.parent and names[p.candidate]["method"] == "structured-mlp"
    assert any(r["pareto"] for r in rep.rows)
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
    return subprocess.run([sys.executable, "-m", "odyssey.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


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


@pytest.mark.slow
def test_isolated_measurement_has_its_own_memory(project):
    from odyssey.optimize.common import resolve_parent
    from odyssey.optimize.measure import measure_model, settings_for

    parent = resolve_parent(project, "tiny:llama")
    settings = {**settings_for(project), "isolate": True}
    m = measure_model(project, "tiny:llama", parent.prompt, settings=settings)
    # a fresh process: its peak is far below this test process's (which has loaded many models by now)
    assert 0 < m["base_rss_gb"] < m["load_rss_gb"] <= m["peak_rss_gb"] < 2
    assert m["n_examples"] == 2 and m["decode_tok_s"] > 0


@pytest.mark.parametrize("method", ["int8-weight-only", "int4"])
def test_other_torchao_methods_load_and_stay_close(project, method):
    from odyssey.optimize import quantize

    result = quantize(project, method, measure=False)
    ids = torch.tensor([[1, 40, 41, 300, 7, 9]])
    base, q = _logits("tiny:llama", ids), _logits(result.model_ref, ids)
    rel = float((q - base).norm() / base.norm())
    assert 0 < rel < (0.1 if method == "int8-weight-only" else 0.5)  # int4 is coarser than int8
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
