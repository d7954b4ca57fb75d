"""KTO, ORPO and SimPO beside DPO through the align stage's entry functions, on the one loop: each trains
a tiny model towards the preference and records a candidate; KTO learns from serve's thumbs; a kill -9
mid-run resumes to the uninterrupted losses; the spec and the entry points reject bad settings clearly;
`odyssey align compare` ranks the methods against DPO on the same test rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from odyssey.errors import OdysseyError
from odyssey.project import Project
from tests.align.test_dpo_cli import _prefs_project
from tests.conftest import kill_9_at_ready, tiny_project

JOB = Path(__file__).with_name("_align_job.py")
FAST = "{epochs: 3, learning_rate: 0.005, batch_size: 4}"


def _project(tmp_path, extra: str = ""):
    from odyssey.align.preferences import build_preferences

    project, rows = _prefs_project(
        tmp_path, f"align:\n  dpo: {FAST}\n  kto: {FAST}\n  orpo: {FAST}\n  simpo: {FAST}\n" + extra
    )
    build_preferences(project, sources=[{"kind": "file", "path": "prefs.jsonl"}])
    return project, rows


def _margin(model_ref: str, rows) -> float:
    """Mean over the pairs of log p(chosen) - log p(rejected) under the model."""
    from odyssey.models import load
    from tests.align.logprobs import sequence_logprobs

    m = load(model_ref, dtype="float32")
    prompts = [r["prompt"] for r in rows]
    c = sequence_logprobs(m, prompts, [r["chosen"] for r in rows])
    r = sequence_logprobs(m, prompts, [r["rejected"] for r in rows])
    return sum(a - b for a, b in zip(c, r)) / len(rows)


@pytest.mark.parametrize("method", ["kto", "orpo", "simpo"])
def test_each_method_learns_the_preference_and_records_a_candidate(tmp_path, method):
    from odyssey.align.dpo import train_preference

    project, rows = _project(tmp_path)
    result = train_preference(project, method, evaluate=False)
    cand = project.store.candidate(result.candidate)
    parent = project.store.candidate(cand["parent_id"])
    assert result.candidate == f"{parent['name']}+{method}" and cand["stage"] == "align"
    assert cand["config"]["align"]["method"] == method and cand["config"]["align"]["lora"] is True
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses) == (12 if method == "kto" else 6)  # 8 pairs (KTO: 16 answers) in groups of 4, 3 epochs
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2
    assert _margin(cand["model_ref"], rows) > _margin(parent["model_ref"], rows) + 1.0
    run = project.store.get_run(result.run_id)
    assert run["config"]["action"] == method and run["summary"]["steps"] == len(losses)


def _thumbs(project, rows):
    from odyssey.store.deploy import write_batch

    feedback = []
    for r in rows:
        feedback.append({"kind": "thumbs", "prompt": r["prompt"], "output": r["chosen"], "thumbs": 1})
        feedback.append({"kind": "thumbs", "prompt": r["prompt"], "output": r["rejected"], "thumbs": -1})
    write_batch(project.store, [], feedback)


def test_kto_learns_from_thumbs_captured_by_serve(tmp_path):
    """No preference pairs at all: KTO trains on thumbs up/down alone."""
    from odyssey.align.dpo import train_kto

    project, rows = _prefs_project(tmp_path, f"align:\n  kto: {FAST}\n")
    _thumbs(project, rows)
    result = train_kto(project, data="feedback", evaluate=False)
    run = project.store.get_run(result.run_id)
    assert run["config"]["feedback_answers"] == 16 and "preference_set" not in run["config"]
    cand = project.store.candidate(result.candidate)
    assert cand["config"]["align"]["data"] == "feedback"
    assert _margin(cand["model_ref"], rows) > _margin(project.store.candidate(cand["parent_id"])["model_ref"], rows)
    assert {"kl", "rewards/margins"} <= set(result.history[-1])


def test_kto_needs_both_kinds_of_answers(tmp_path):
    from odyssey.align.dpo import train_kto
    from odyssey.store.deploy import write_batch

    project, rows = _prefs_project(tmp_path, f"align:\n  kto: {FAST}\n")
    write_batch(project.store, [], [{"kind": "thumbs", "prompt": "Q", "output": "fine", "thumbs": 1}])
    with pytest.raises(OdysseyError, match="1 desirable and 0 undesirable") as err:
        train_kto(project, data="feedback", evaluate=False)
    assert "thumbs up and down" in err.value.hint
    with pytest.raises(OdysseyError, match="batch_size=1"):
        train_kto(project, batch_size=1, evaluate=False)


def test_held_out_pairs_give_a_validation_loss_and_early_stopping(tmp_path):
    from odyssey.align.dpo import train_dpo

    project, _ = _project(tmp_path)
    result = train_dpo(
        project, evaluate=False, held_out=0.25, eval_every=1, early_stopping_patience=1, learning_rate=0.05, epochs=4
    )
    evals = [h for h in result.history if "val_loss" in h]
    assert evals and "val_rewards/accuracies" in evals[0] and "val_loss" in result.metrics
    summary = project.store.get_run(result.run_id)["summary"]
    assert summary["held_out_examples"] == 2 and summary["examples"] == 6
    # patience 1: training stops at the first validation loss that is no better than the best so far
    values = [h["val_loss"] for h in evals]
    worse = next((i for i in range(1, len(values)) if values[i] >= min(values[:i])), None)
    assert summary["stopped_early"] == (worse is not None and worse + 1 < 8)


# ---- kill -9, then resume --------------------------------------------------------------------------


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _run(root: Path, method: str, *args: str) -> dict:
    subprocess.run(
        [sys.executable, str(JOB), str(root), method, *args],
        check=True,
        env=_env(),
        timeout=300,
        stdout=subprocess.DEVNULL,
    )
    return json.loads((root / "result.json").read_text())


def _killed_at(root: Path, method: str, step: int) -> None:
    kill_9_at_ready([sys.executable, str(JOB), str(root), method, "--hang-at", str(step)], _env())
    assert not (root / "result.json").exists()


@pytest.mark.parametrize(
    ("method", "hang", "resumed", "steps"),
    [("dpo", 5, 4, 8), ("reward", 3, 2, 6), pytest.param("kto", 5, 4, 16, marks=pytest.mark.slow)],
)
def test_kill_9_then_resume_gives_the_uninterrupted_losses(tmp_path, method, hang, resumed, steps):
    straight = _run(tmp_path / "straight", method)
    interrupted = tmp_path / "interrupted"
    _killed_at(interrupted, method, hang)
    again = _run(interrupted, method, "--resume")
    assert again["resumed_from"] == resumed and straight["resumed_from"] is None
    assert again["steps"] == straight["steps"] == steps
    assert again["losses"] == pytest.approx(straight["losses"], abs=1e-6)
    assert max(straight["losses"]) - min(straight["losses"]) > 0.01  # a curve, so equality means something


# ---- clear errors ------------------------------------------------------------------------------------


def test_spec_errors_name_the_field_and_the_fix(tmp_path):
    from odyssey.errors import SpecError

    root = tiny_project(tmp_path / "p")
    base = (root / "odyssey.yaml").read_text()
    cases = [
        ("align:\n  method: ktoo\n", "align.method", "did you mean 'kto'?"),
        ("align:\n  orpo: {lamda: 0.2}\n", "align.orpo.lamda", "allowed keys: batch_size, beta"),
        ("align:\n  kto: {data: thumbs}\n", "align.kto.data", None),
        ("align:\n  simpo: {eval_every: 5}\n", "align.simpo", "held_out"),
    ]
    for extra, field, hint in cases:
        (root / "odyssey.yaml").write_text(base + extra)
        with pytest.raises(SpecError) as err:
            Project.load(root)
        text = str(err.value)  # the message, each problem (file:line field: message) and the hint
        assert field in text and (hint is None or hint in text), text


def test_entry_point_errors_are_clear(tmp_path):
    from odyssey.align.dpo import train_orpo, train_preference

    project, _ = _project(tmp_path)
    with pytest.raises(OdysseyError, match="unknown preference method 'cpo'") as err:
        train_preference(project, "cpo")
    assert "dpo, kto, orpo, simpo" in err.value.hint
    with pytest.raises(OdysseyError, match="align.orpo settings") as err:
        train_orpo(project, beta=-1.0)
    assert "beta" in str(err.value)
    with pytest.raises(OdysseyError, match="max_length"):
        train_orpo(project, max_length=16, evaluate=False)


def test_cli_without_preference_data_is_a_clear_error(tmp_path):
    root = tiny_project(tmp_path / "p")
    for method in ("kto", "orpo", "simpo"):
        out = subprocess.run(
            [sys.executable, "-m", "odyssey.cli", "align", method, "-p", str(root)], capture_output=True, text=True
        )
        assert out.returncode == 2 and "no preference data" in out.stderr, (method, out.stderr)


# ---- ranking against DPO -------------------------------------------------------------------------------


def test_compare_ranks_every_method_against_dpo_on_the_same_rows(tmp_path):
    from odyssey.align.dpo import train_preference
    from odyssey.align.reward import train_reward_model

    project, _ = _project(tmp_path, "  reward: {epochs: 2, learning_rate: 0.003, batch_size: 4, held_out: 0.25}\n")
    spec = (project.root / "odyssey.yaml").read_text().replace("max_new_tokens: 60", "max_new_tokens: 8")
    (project.root / "odyssey.yaml").write_text(spec)
    project = Project.load(project.root)
    train_reward_model(project)
    for method in ("dpo", "simpo"):
        train_preference(project, method, evaluate=False)
    out = subprocess.run(
        [sys.executable, "-m", "odyssey.cli", "align", "compare", "--limit", "3", "-p", str(project.root), "--json"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["n"] == 3 and report["ranked_by"] == "win_rate_vs_dpo" and report["reward_model"]
    methods = {r["method"]: r for r in report["methods"]}
    assert set(methods) == {"dpo", "simpo"} and sorted(r["rank"] for r in methods.values()) == [1, 2]
    assert methods["dpo"]["win_rate_vs_dpo"] == 0.5 and methods["dpo"]["metric_win_rate_vs_dpo"] == 0.5
    lo, hi = methods["simpo"]["win_rate_vs_dpo_ci"]
    assert lo <= methods["simpo"]["win_rate_vs_dpo"] <= hi
    assert all(r["kl"] is not None and r["win_rate"] is not None for r in methods.values())
    ranked = [r["win_rate_vs_dpo"] for r in report["methods"]]
    assert ranked == sorted(ranked, reverse=True)


def test_align_method_picks_the_pipeline_steps(tmp_path):
    """`odyssey run`'s align step expands by align.method; KTO on thumbs alone builds no pairs first."""
    from odyssey.pipeline.stages import STAGES, expand_composite

    root = tiny_project(tmp_path / "p")
    base = (root / "odyssey.yaml").read_text()
    cases = [
        ("dpo", "", ["preferences", "dpo"]),
        ("orpo", "", ["preferences", "orpo"]),
        ("simpo", "", ["preferences", "simpo"]),
        ("kto", "", ["preferences", "kto"]),
        ("kto", "  kto: {data: feedback}\n", ["kto"]),
        ("ppo", "", ["preferences", "reward", "ppo"]),
    ]
    for method, extra, expected in cases:
        (root / "odyssey.yaml").write_text(base + f"align:\n  method: {method}\n" + extra)
        spec = Project.load(root).spec
        assert [stage for _, stage, _ in expand_composite("align", spec, {})] == expected, method
        if method != "ppo":
            assert STAGES[method].section == f"align.{method}"
            assert STAGES[method].estimate(spec) == ("lora", 8, 768, int(2 * 64 * 768))
