"""``odyssey run``'s plan, hashing and caching, with stand-in runners (no model is loaded): which steps
run, which are cached, which resume; and every bad input as an error naming odyssey.yaml and the field."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from odyssey.errors import OdysseyError, SpecError
from odyssey.pipeline import run_pipeline
from odyssey.pipeline.stages import STAGES, Outcome
from odyssey.project import Project
from tests.conftest import tiny_project

MAKES_NO_CANDIDATE = {"scope", "preferences", "reward", "evaluate"}


class FakeStages:
    """Runners that record the call and make a candidate named after the step, linked to its parent."""

    def __init__(self, fail_once: str | None = None, scores: dict[str, float] | None = None):
        self.calls: list[tuple[str, bool]] = []  # (step id, resume)
        self.fail_once = fail_once
        self.scores = scores or {}  # step id -> the test score its candidate gets

    def runners(self) -> dict:
        return {name: self._runner(name) for name in STAGES}

    def _runner(self, stage: str):
        def run(ctx):
            self.calls.append((ctx.step.id, ctx.resume))
            if self.fail_once == ctx.step.id:
                self.fail_once = None
                raise RuntimeError("simulated crash")
            if stage in MAKES_NO_CANDIDATE:
                return Outcome(extra={"preference_set": 1} if stage == "preferences" else {})
            store = ctx.project.store
            parent = store.candidate(ctx.parent.name) if ctx.parent and ctx.parent.name else None
            with store.run(stage, ctx.project.spec.as_dict()) as run:
                name = f"{ctx.step.id}-made"
                cid = store.upsert_candidate(name, stage, f"./{name}", {}, parent["id"] if parent else None, run.id)
                if ctx.step.id in self.scores:
                    run.log_metrics({"rougeL": self.scores[ctx.step.id]}, candidate_id=cid, split="test")
            return Outcome([name], [run.id])

        return run


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("ODYSSEY_CODE_VERSION", "test-1")
    from odyssey.pipeline.plan import code_version

    code_version.cache_clear()
    # the planner's estimate is tested on its own (test_memory_constraint_refuses_a_training_step)
    monkeypatch.setattr("odyssey.pipeline.run.estimate_step", lambda base, plan, step: None)
    return tiny_project(tmp_path / "p")


def _run(root, fake: FakeStages, **options):
    return run_pipeline(Project.load(root), stages=fake.runners(), **options)


def _status(result) -> dict[str, str]:
    return {s.step: s.status for s in result.steps}


def _edit(root, old: str, new: str):
    spec = (root / "odyssey.yaml").read_text()
    assert old in spec
    (root / "odyssey.yaml").write_text(spec.replace(old, new))


def _append(root, text: str):
    (root / "odyssey.yaml").write_text((root / "odyssey.yaml").read_text() + text)


STEPS = [
    "scope",
    "prompt",
    "finetune",
    "align.preferences",
    "align.dpo",
    "optimize.quantize-int8",
    "optimize.quantize-gguf-q8_0",
    "optimize.quantize-gguf-q4_k_m",
    "evaluate",
]


def test_default_pipeline_then_everything_is_cached(root):
    fake = FakeStages()
    first = _run(root, fake)
    assert [s.step for s in first.steps] == STEPS
    assert set(_status(first).values()) == {"ran"}
    assert [s.parent for s in first.steps[:5]] == [None, "tiny:llama", "prompt-made", "finetune-made", "finetune-made"]
    fake.calls.clear()
    second = _run(root, fake)
    assert fake.calls == [] and set(_status(second).values()) == {"cached"}
    assert (root / ".odyssey" / "pipeline" / "report.md").exists()


def test_a_changed_section_reruns_that_step_and_the_ones_after_it(root):
    fake = FakeStages()
    _run(root, fake)
    _append(root, "align:\n  dpo: {beta: 0.3}\n")
    fake.calls.clear()
    status = _status(_run(root, fake))
    assert [c for c, _ in fake.calls] == ["align.dpo", "evaluate"]  # optimize starts from 'best', which is unchanged
    assert all(status[s] == "cached" for s in STEPS[:4])

    _append(root, "adapt: {max_steps: 3}\n")
    fake.calls.clear()
    _run(root, fake)
    assert [c for c, _ in fake.calls] == ["finetune", "align.preferences", "align.dpo", "evaluate"]


def test_data_and_code_version_are_inputs(root, monkeypatch):
    from odyssey.pipeline.plan import code_version

    fake = FakeStages()
    _run(root, fake)
    monkeypatch.setenv("ODYSSEY_CODE_VERSION", "test-2")
    code_version.cache_clear()
    fake.calls.clear()
    _run(root, fake)
    assert [c for c, _ in fake.calls] == STEPS
    data = root / "data" / "dialogues.jsonl"
    data.write_text(data.read_text().replace("#Person1#", "#Person1# ", 1))
    fake.calls.clear()
    _run(root, fake)
    assert [c for c, _ in fake.calls] == STEPS


def test_a_crashed_step_resumes_and_finished_ones_are_not_rerun(root):
    fake = FakeStages(fail_once="finetune")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(root, fake)
    fake.calls.clear()
    status = _status(_run(root, fake))
    assert fake.calls[0] == ("finetune", True) and ("prompt", False) not in fake.calls
    assert status["prompt"] == "cached" and status["finetune"] == "resumed" and status["align.dpo"] == "ran"


def test_a_killed_step_is_resumed(root):
    """A record left 'running' by a process that is gone (kill -9) is resumed, not started over."""
    from odyssey.store.pipeline import latest_step

    fake = FakeStages(fail_once="finetune")
    with pytest.raises(RuntimeError):
        _run(root, fake)
    digest = latest_step(Project.load(root).store, "finetune")["input_hash"]
    # what a killed run leaves: a 'running' record with these inputs, written by a process now gone
    code = (
        "import sys; from odyssey.project import Project; from odyssey.store.pipeline import start_step; "
        "start_step(Project.load(sys.argv[1]).store, step='finetune', stage='finetune', input_hash=sys.argv[2], "
        "inputs={}, pipeline_run_id=None, resumed=False)"
    )
    subprocess.run([sys.executable, "-c", code, str(root), digest], check=True, timeout=120)
    assert latest_step(Project.load(root).store, "finetune")["status"] == "running"
    fake.calls.clear()
    _run(root, fake)
    assert fake.calls[0] == ("finetune", True)
    assert latest_step(Project.load(root).store, "finetune", status="interrupted") is not None


def test_from_and_only(root):
    fake = FakeStages()
    _run(root, fake)
    fake.calls.clear()
    result = _run(root, fake, from_step="align")
    assert [c for c, _ in fake.calls] == STEPS[3:]
    assert _status(result)["finetune"] == "skipped"
    fake.calls.clear()
    _run(root, fake, only="finetune")
    assert [c for c, _ in fake.calls] == ["finetune"]
    with pytest.raises(OdysseyError, match=r"--only 'finetun'.*\n.*did you mean 'finetune'"):
        _run(root, fake, only="finetun")


def test_only_needs_the_earlier_steps_once(root):
    with pytest.raises(OdysseyError, match="step 'scope' has never finished"):
        _run(root, FakeStages(), only="finetune")


def test_dry_run_says_what_is_cached(root):
    fake = FakeStages()
    assert set(_status(_run(root, fake, dry_run=True)).values()) == {"will run"} and fake.calls == []
    _run(root, fake)
    assert set(_status(_run(root, fake, dry_run=True)).values()) == {"cached"}
    _append(root, "adapt: {max_steps: 3}\n")
    status = _status(_run(root, fake, dry_run=True))
    assert status["prompt"] == "cached" and status["finetune"] == "will run" and status["evaluate"] == "will run"


def test_profiles_override_sizes(root):
    from odyssey.pipeline.plan import make_plan

    _append(root, "profiles:\n  mine: {adapt: {max_steps: 7}}\n")
    project = Project.load(root)
    assert make_plan(project, "mine").spec.adapt.max_steps == 7
    assert make_plan(project, "quick").spec.adapt.max_steps == 2
    assert make_plan(project, None).spec.adapt.max_steps is None


def test_pipeline_steps_with_parents_and_overrides(root):
    _append(
        root,
        """pipeline:
  - {stage: prompt}
  - {stage: finetune, name: ft-full, parent: prompt, with: {method: full}}
  - {stage: quantize, parent: ft-full, with: {to: int8, measure: false}}
  - {stage: evaluate}
""",
    )
    fake = FakeStages()
    result = _run(root, fake)
    assert [(s.step, s.parent) for s in result.steps] == [
        ("prompt", "tiny:llama"),
        ("ft-full", "prompt-made"),
        ("quantize", "ft-full-made"),
        ("evaluate", None),
    ]
    from odyssey.pipeline.plan import make_plan

    plan = make_plan(Project.load(root))
    assert plan.steps[1].spec.adapt.method == "full" and plan.steps[2].args == {"to": "int8", "measure": False}


def test_best_of_a_stage_is_the_parent_among_that_stages_steps_only(root):
    """``best:finetune`` picks the best fine-tune even when a later, better-scoring step (DPO) ran before it."""
    _append(
        root,
        """pipeline:
  - {stage: finetune, name: lora, with: {method: lora}}
  - {stage: finetune, name: full, with: {method: full}}
  - {stage: dpo, parent: best:finetune}
  - {stage: quantize, parent: best:finetune, with: {to: int8, measure: false}}
  - {stage: prune, parent: best}
""",
    )
    fake = FakeStages(scores={"lora": 0.30, "full": 0.35, "dpo": 0.50})
    result = _run(root, fake)
    parents = {s.step: s.parent for s in result.steps}
    assert parents["dpo"] == "full-made"  # the better of the two fine-tunes
    assert parents["quantize"] == "full-made"  # not DPO's, though it scores higher
    assert parents["prune"] == "dpo-made"  # plain 'best' is over every earlier step


def test_best_of_a_stage_with_no_step_of_it_before(root):
    text = _error(root, "pipeline:\n  - {stage: prompt}\n  - {stage: quantize, parent: best:finetune}\n")
    assert f"odyssey.yaml:{_line_of(root, 'best:finetune')} pipeline[1].parent" in text
    assert "no finetune step runs before it" in text and "prompt" in text


# ---- bad input: file, line, field -------------------------------------------------------------------


def _error(root, pipeline: str, **options) -> str:
    _append(root, pipeline)
    with pytest.raises(OdysseyError) as info:
        run_pipeline(Project.load(root), stages=FakeStages().runners(), **options)
    return str(info.value)


def _line_of(root, text: str) -> int:
    return next(i for i, line in enumerate((root / "odyssey.yaml").read_text().splitlines(), 1) if text in line)


def test_unknown_stage_has_a_did_you_mean(root):
    _append(root, "pipeline:\n  - {stage: prompt}\n  - {stage: finetun}\n")
    with pytest.raises(SpecError) as info:
        Project.load(root)
    text = str(info.value)
    assert f"odyssey.yaml:{_line_of(root, 'finetun}')} pipeline[1].stage" in text and "did you mean 'finetune'" in text


def test_a_parent_that_does_not_exist(root):
    text = _error(root, "pipeline:\n  - {stage: prompt}\n  - {stage: finetune, parent: promt}\n")
    assert f"odyssey.yaml:{_line_of(root, 'promt')} pipeline[1].parent" in text
    assert "'promt'" in text and "did you mean 'prompt'" in text


def test_a_cycle_of_parents(root):
    text = _error(root, "pipeline:\n  - {stage: finetune, name: a, parent: b}\n  - {stage: dpo, name: b, parent: a}\n")
    assert "pipeline[0].parent" in text and "cycle: a -> b -> a" in text and "odyssey.yaml:" in text


def test_a_profile_that_does_not_exist(root):
    text = _error(root, "", profile="quik")
    assert "--profile 'quik'" in text and "did you mean 'quick'" in text and "odyssey.yaml" in text


def test_an_override_the_section_does_not_have(root):
    text = _error(root, "pipeline:\n  - {stage: finetune, with: {methd: lora}}\n")
    assert f"odyssey.yaml:{_line_of(root, 'methd')} pipeline[0].with" in text and "adapt.methd" in text


def test_two_steps_with_one_name(root):
    text = _error(root, "pipeline:\n  - {stage: prompt}\n  - {stage: prompt}\n")
    assert "pipeline[1]" in text and "two steps are called 'prompt'" in text


def test_cli_bad_profile_is_exit_2(root):
    proc = subprocess.run(
        [sys.executable, "-m", "odyssey.cli", "run", "-p", str(root), "--profile", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--profile 'nope': no such profile" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_training_step_that_does_not_fit_the_hardware_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ODYSSEY_CODE_VERSION", "test-1")
    root = tiny_project(tmp_path / "p")
    _edit(root, "hardware: cpu", "hardware: 'cpu:2,ram:0.2gb'")
    fake = FakeStages()
    dry = run_pipeline(Project.load(root), stages=fake.runners(), dry_run=True)
    estimate = next(s.estimate for s in dry.steps if s.step == "finetune")
    assert estimate["method"] == "lora" and estimate["fits"] is False and estimate["memory_gb"] > 0.2
    with pytest.raises(SpecError) as info:
        run_pipeline(Project.load(root), stages=fake.runners())
    text = str(info.value)
    assert f"odyssey.yaml:{_line_of(root, 'hardware:')} scope.constraints.hardware" in text and "'finetune'" in text
    assert fake.calls == []  # refused before anything started


@pytest.mark.parametrize("task", ["summarization", "classification", "qa"])
def test_every_built_in_profile_fits_every_template(tmp_path, task):
    from odyssey.pipeline.names import PROFILES
    from odyssey.pipeline.plan import make_plan
    from odyssey.scaffold import init_project

    project = Project.load(init_project(tmp_path / "p", task))
    for name in PROFILES:
        steps = make_plan(project, name).steps
        assert [s.stage for s in steps][:3] == ["scope", "prompt", "finetune"], name


def test_a_second_run_at_once_is_refused(root):
    from odyssey.store.pipeline import start_step

    project = Project.load(root)
    # a live process (this test's parent, pytest's own pid is skipped as "this run") holding a step
    start_step(
        project.store, step="prompt", stage="prompt", input_hash="x", inputs={}, pipeline_run_id=None, resumed=False
    )
    project.store.db.execute("UPDATE pipeline_steps SET pid = ?", (os.getppid(),))  # test-only: another live pid
    with pytest.raises(OdysseyError, match=r"another `odyssey run` \(pid \d+\) is running step 'prompt'"):
        _run(root, FakeStages())


def test_best_is_among_the_pipelines_own_candidates(root):
    """'best' is the store's rule over what earlier steps made, on their own runs' metrics: a better candidate
    added later or a re-scored one (here by hand, as the evaluate step does) leaves a cached step's parent."""
    fake = FakeStages(scores={"prompt": 0.2, "finetune": 0.4})
    first = _run(root, fake)
    assert {s.step: s.parent for s in first.steps}["optimize.quantize-int8"] == "finetune-made"
    store = Project.load(root).store
    with store.run("evaluate", {}) as run:  # what the evaluate step does: baselines, and everyone re-scored
        outsider = store.upsert_candidate("outsider", "select", "./outsider", {}, None, run.id)
        run.log_metrics({"rougeL": 0.9}, candidate_id=outsider, split="test")
        run.log_metrics({"rougeL": 0.95}, candidate_id=store.candidate("prompt-made")["id"], split="test")
    fake.calls.clear()
    assert set(_status(_run(root, fake)).values()) == {"cached"} and fake.calls == []
