import json
from pathlib import Path

import pytest

from odyssey.data import Example
from odyssey.engines.transformers import generate
from odyssey.evaluate import check_gates, percentile, run_harness
from odyssey.models import load
from odyssey.project import Project
from odyssey.prompts import PromptConfig
from odyssey.spec import Scope
from tests.conftest import tiny_project

SCOPE = Scope.model_validate({"task": "summarization", "data": {"source": "x"}, "gates": {"rougeL": ">= 0.3"}})


@pytest.mark.parametrize("ref", ["tiny:llama", "tiny:t5"])
def test_batched_generation_equals_one_at_a_time(ref):
    loaded = load(ref)
    prompts = [
        "#Person1#: Hi.",
        "#Person1#: Where is the station? #Person2#: Two blocks north, by the bank.",
        "Short",
        "#Person2#: I would like to return this jacket, it is too small for me.",
    ]
    settings = {"max_new_tokens": 12}
    batched, stats = generate(loaded, prompts, settings, batch_size=4)
    single = [generate(loaded, [p], settings, batch_size=1)[0][0] for p in prompts]
    assert [b.text for b in batched] == [s.text for s in single]
    assert all(b.new_tokens <= 12 for b in batched)
    assert stats["new_tokens"] == sum(b.new_tokens for b in batched) > 0


def test_left_padding_for_decoders():
    loaded = load("tiny:llama")
    generate(loaded, ["a", "a much longer prompt here"], {"max_new_tokens": 2}, batch_size=2)
    assert loaded.tokenizer.padding_side == "left"


def test_encoder_only_cannot_generate_clear_error():
    from odyssey.errors import OdysseyError

    with pytest.raises(OdysseyError, match="encoder-only model"):
        generate(load("tiny:bert"), ["x"], {"max_new_tokens": 2})


def test_harness_scores_and_keeps_every_output():
    loaded = load("tiny:llama")
    examples = [Example(str(i), f"#Person1#: question {i}", (f"answer {i}",)) for i in range(5)]
    cfg = PromptConfig.default("summarization", generation={"max_new_tokens": 8})
    result = run_harness(loaded, examples, cfg, SCOPE, batch_size=2)
    assert len(result.rows) == 5 and all(r["prompt"] and "scores" in r for r in result.rows)
    for key in ("rouge1", "rougeL", "p95_latency_ms", "examples_per_s", "memory_gb"):
        assert key in result.metrics
    mean = sum(r["scores"]["rougeL"] for r in result.rows) / 5
    assert result.metrics["rougeL"] == pytest.approx(mean)
    assert result.metrics["p95_latency_ms"] >= result.metrics["p50_latency_ms"] > 0


def test_percentile_matches_numpy():
    import numpy as np

    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_gates_report_pass_fail_and_unmeasured():
    results = {g["metric"]: g for g in check_gates(SCOPE, {"rougeL": 0.2})}
    assert results["rougeL"]["passed"] is False
    scope = Scope.model_validate(
        {"task": "summarization", "data": {"source": "x"}, "gates": {"rougeL": ">= 0.1", "p95_latency_ms": "<= 5"}}
    )
    results = {g["metric"]: g for g in check_gates(scope, {"rougeL": 0.2})}
    assert results["rougeL"]["passed"] is True and results["p95_latency_ms"]["passed"] is None


def test_evaluate_candidate_records_run_outputs_report(tmp_path):
    project = Project.load(tiny_project(tmp_path / "p"))
    result = project.evaluate(split="test", limit=3)
    assert result.candidate == "tiny-llama:zero-shot" and set(result.report) == {"json", "markdown", "plot"}
    run = project.store.get_run(result.run_id)
    assert run["status"] == "succeeded" and run["config"]["n"] == 3
    assert len(project.store.outputs(result.run_id)) == 3
    report = json.loads(Path(result.report["json"]).read_text())
    assert report["metrics"]["rougeL"] == pytest.approx(result.metrics["rougeL"])
    assert "| `rougeL >= 0.3` |" in Path(result.report["markdown"]).read_text()
    assert Path(result.report["plot"]).read_bytes()[:4] == b"\x89PNG"
    kinds = {a["kind"] for a in project.store.artifacts(result.run_id)}
    assert kinds == {"report-json", "report-markdown", "report-plot"}
    board = project.status()
    assert board.candidates[0].name == "tiny-llama:zero-shot" and board.best == "tiny-llama:zero-shot"
    assert {s["stage"]: s["status"] for s in board.stages}["evaluate"] == "succeeded"


def test_eval_failure_marks_run_failed(tmp_path):
    project = Project.load(tiny_project(tmp_path / "p", model="tiny:bert"))
    from odyssey.errors import OdysseyError

    with pytest.raises(OdysseyError):
        project.evaluate(split="test", limit=2)
    assert project.store.runs("evaluate")[0]["status"] == "failed"
