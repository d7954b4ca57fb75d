"""The Candidate: one resolver (Project.candidate), one rule for "best" (Store.best), one default prompt.

The tiny project's scope gates rougeL >= 0.30 and p95_latency_ms <= 30000 (and memory_gb <= 4 from
its constraints); rougeL is the primary metric.
"""

from __future__ import annotations

import pytest

from odyssey.project import Project
from odyssey.store.candidates import Candidate, UnknownCandidate
from tests.conftest import tiny_project

FAST = {"p95_latency_ms": 100.0, "memory_gb": 1.0}


@pytest.fixture
def project(tmp_path):
    return Project.load(tiny_project(tmp_path / "p"))


def _scored(
    project, name: str, metrics: dict, *, stage: str = "prompt", split: str = "test", config=None, parent_id=None
) -> int:
    store = project.store
    cand = store.upsert_candidate(
        name,
        stage,
        "tiny:llama",
        config if config is not None else {"prompt": project.default_prompt().as_dict()},
        parent_id,
    )
    with store.run("evaluate", {}) as run:
        run.log_metrics(metrics, candidate_id=cand, split=split)
    return cand


def test_a_candidate_that_passes_every_gate_beats_a_higher_score_that_fails(project):
    _scored(project, "slow-but-good", {"rougeL": 0.50, **FAST, "p95_latency_ms": 40000.0})
    _scored(project, "passes", {"rougeL": 0.35, **FAST})
    _scored(project, "fails-low", {"rougeL": 0.20, **FAST})
    best = project.store.best()
    assert isinstance(best, Candidate) and best.name == "passes"
    assert project.status().best == "passes"  # the board asks the same rule


def test_with_no_candidate_passing_the_highest_score_wins(project):
    _scored(project, "a", {"rougeL": 0.10, **FAST})
    _scored(project, "b", {"rougeL": 0.25, **FAST})
    _scored(project, "c", {"rougeL": 0.28, **FAST, "memory_gb": 9.0})  # fails the memory constraint too
    assert project.store.best().name == "c"


def test_a_tie_goes_to_the_older_candidate(project):
    _scored(project, "parent", {"rougeL": 0.40, **FAST, "n_params": 2000.0})
    _scored(project, "int8", {"rougeL": 0.40, **FAST, "n_params": 1000.0})  # packed weights count fewer
    _scored(project, "newer", {"rougeL": 0.40, **FAST})
    assert project.store.best().name == "parent"
    _scored(project, "better", {"rougeL": 0.41, **FAST, "n_params": 5000.0})
    assert project.store.best().name == "better"


def test_only_the_split_asked_for_counts_and_stages_narrow_the_pool(project):
    _scored(project, "validation-only", {"rougeL": 0.90, **FAST}, split="validation")
    assert project.store.best() is None
    assert project.store.best("validation").name == "validation-only"
    _scored(project, "prompted", {"rougeL": 0.60, **FAST})
    _scored(project, "tuned", {"rougeL": 0.40, **FAST}, stage="adapt")
    assert project.store.best().name == "prompted"
    assert project.store.best(stage="adapt").name == "tuned"
    assert project.store.best(exclude_stage="prompt").name == "tuned"
    assert project.store.best(metric="rouge1") is None  # nobody measured rouge1


def test_resolve_best_and_names(project):
    with pytest.raises(UnknownCandidate, match="none is 'best'"):
        project.store.resolve("best")
    parent = _scored(project, "base", {"rougeL": 0.31, **FAST})
    _scored(
        project,
        "child",
        {"rougeL": 0.32, **FAST},
        stage="adapt",
        config={"method": "lora", "prompt": {"task": "summarization", "instruction": "Sum it up."}},
        parent_id=parent,
    )
    best = project.store.resolve("best")
    assert best == project.store.resolve("child") == project.candidate("best") == project.candidate("child")
    assert (best.stage, best.method, best.parent, best.parent_id) == ("adapt", "lora", "base", parent)
    assert best.prompt.instruction == "Sum it up." and best.reference == "tiny:llama" and best.stored
    with pytest.raises(UnknownCandidate, match="no candidate named 'nobody'") as err:
        project.store.resolve("nobody")
    assert "base, child" in err.value.hint


def test_a_candidate_stored_without_a_prompt_gets_the_default_one(project):
    project.store.upsert_candidate("bare", "optimize", "tiny:llama", {"optimize": {"method": "int8"}})
    bare = project.candidate("bare")
    assert bare.prompt == project.default_prompt() and bare.method == "int8"


def test_a_model_reference_is_a_zero_shot_pseudo_candidate_with_the_default_prompt(project):
    prompt = project.default_prompt()
    spec = project.spec
    assert prompt.shots == 0 and prompt.task == "summarization"
    assert prompt.generation == spec.evaluate.generation.model_dump() and prompt.generation["max_new_tokens"] == 60
    assert prompt.system == spec.prompt.system and "Summarize" in prompt.instruction
    zero = project.candidate("tiny:gpt2")
    assert (zero.name, zero.model_ref, zero.stage, zero.method) == (
        "tiny-gpt2:zero-shot",
        "tiny:gpt2",
        "select",
        "zero-shot",
    )
    assert zero.prompt == prompt and zero.id is None and not zero.stored
    assert project.store.candidates() == []  # resolving stores nothing
    # 'best' with nothing scored yet: the project's first model, zero-shot
    assert project.candidate("best").name == "tiny-llama:zero-shot"
    assert project.candidate(None).model_ref == "tiny:llama"
    stored = project.store.ensure(zero)
    assert stored.stored and project.store.candidate(stored.id)["name"] == "tiny-gpt2:zero-shot"
    assert project.store.ensure(project.candidate("tiny:gpt2")).id == stored.id  # kept once
    with pytest.raises(UnknownCandidate, match="no candidate named 'tiny:nope'") as err:
        project.candidate("tiny:nope")
    assert "unknown tiny model family" in err.value.hint


def test_board_optimize_align_serve_and_eval_agree_on_best(project):
    from odyssey.align.common import starting_candidate
    from odyssey.deploy.serve import pick_candidates
    from odyssey.evaluate import candidate_setup
    from odyssey.optimize.common import resolve_parent

    base = _scored(project, "tiny:prompt", {"rougeL": 0.33, **FAST})
    _scored(project, "tiny:lora", {"rougeL": 0.45, **FAST}, stage="adapt", parent_id=base)
    _scored(project, "tiny:lora-slow", {"rougeL": 0.60, **FAST, "p95_latency_ms": 99999.0}, stage="adapt")
    _scored(project, "tiny:prompt-low", {"rougeL": 0.31, **FAST})
    best = project.store.best()
    assert best.name == "tiny:lora"
    assert project.status().best == best.name
    assert resolve_parent(project, "best") == best
    assert starting_candidate(project).candidate == best
    [served] = pick_candidates(project, ["best"])
    assert served.candidate == best and served.name == best.name and served.prompt == best.config["prompt"]
    assert candidate_setup(project, None, None) == (best.name, best.model_ref, best.prompt, best.parent_id)


def test_align_prefers_a_fine_tuned_parent_through_the_same_rule(project):
    from odyssey.align.common import starting_candidate

    _scored(project, "prompted", {"rougeL": 0.60, **FAST})
    _scored(project, "aligned", {"rougeL": 0.90, **FAST}, stage="align")
    start = starting_candidate(project)
    assert start.name == "prompted" and "no fine-tuned" in start.note  # an aligned model is not re-aligned
    _scored(project, "tuned", {"rougeL": 0.35, **FAST}, stage="adapt")
    assert starting_candidate(project).name == "tuned"
    assert starting_candidate(project, "tiny:gpt2").name == "tiny-gpt2:zero-shot"
