"""``odyssey tune`` on the example project with tiny:llama (2 steps a trial): the study in Optuna's SQLite
storage, kill -9 mid-search and a resume that repeats no finished trial, pruning from the validation
loss, every trial a candidate on the board; bad search spaces as errors before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from odyssey.project import Project
from tests.conftest import REPO, tiny_project

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed: pip install 'llm-odyssey[tune]'")

ADAPT = "adapt:\n  method: lora\n  max_seq_len: 96\n  batch_tokens: 384\n  val_limit: 4\n  save_every: 1\n"
TUNE = (
    "tune:\n  trials: 8\n  eval_every: 1\n  prune_startup_trials: 2\n  space:\n"
    "    learning_rate: [1.0e-4, 1.0e-1, log]\n    lora_r: [2, 4, 8]\n"
    "    lora_targets: [[q_proj, v_proj], all-linear]\n"
)


def _project(root: Path, tune: str = TUNE) -> Project:
    tiny_project(root)
    spec = (root / "odyssey.yaml").read_text().replace("max_new_tokens: 60", "max_new_tokens: 4")
    (root / "odyssey.yaml").write_text(spec + ADAPT + tune)
    return Project.load(root)


def _study(root: Path, name: str = "tiny-llama-lora"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / '.odyssey' / 'tune' / 'optuna.db'}")


def _states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _tune_cmd(root: Path, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "odyssey.cli",
        "tune",
        "--project",
        str(root),
        "--trials",
        "8",
        "--max-steps",
        "2",
        "--limit",
        "2",
        *extra,
    ]


def _env() -> dict:
    """The test session's environment (its ODYSSEY_HOME, engine, quiet output: set by a session fixture,
    after this module is imported) for the odyssey subprocesses."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_tune_runs_8_trials_and_resumes_after_kill_9_without_repeating_a_finished_one(tmp_path):
    root = tmp_path / "p"
    _project(root)
    log = open(tmp_path / "tune.log", "wb")  # a file, not a pipe nobody reads until the end
    proc = subprocess.Popen(_tune_cmd(root), stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    storage = root / ".odyssey" / "tune" / "optuna.db"
    deadline = time.monotonic() + 600
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if not storage.exists():
            continue
        try:
            study = _study(root)
        except KeyError:  # the study is being created
            continue
        states = _states(study)
        if states.get("COMPLETE", 0) + states.get("PRUNED", 0) >= 3 and states.get("RUNNING"):
            os.killpg(proc.pid, signal.SIGKILL)
            killed_at = {
                t.number: (t.state.name, t.value, dict(t.params), t.user_attrs.get("run_id"))
                for t in study.get_trials(deepcopy=False)
            }
            break
    proc.wait(timeout=60)
    log.close()
    assert killed_at is not None, f"it ended before the kill: {(tmp_path / 'tune.log').read_text()[-3000:]}"
    [cut] = [n for n, (state, *_) in killed_at.items() if state == "RUNNING"]

    again = subprocess.run(_tune_cmd(root, "--json"), capture_output=True, text=True, env=_env(), timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    result = json.loads(again.stdout)

    study = _study(root)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    states = _states(study)
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 8 and states.get("FAIL") == 1
    assert not states.get("RUNNING")
    assert trials[cut].state.name == "FAIL"
    # finished trials were not run again: same state and value, and the rerun started after them
    for number, (state, value, params, _run_id) in killed_at.items():
        if state in {"COMPLETE", "PRUNED"}:
            assert (trials[number].state.name, trials[number].value, trials[number].params) == (state, value, params)
            assert number not in result["ran"]
    assert min(result["ran"]) > max(killed_at)
    retry = [t for t in trials.values() if t.user_attrs.get("retry_of") == cut]
    assert len(retry) == 1 and retry[0].params == killed_at[cut][2]  # the cut-off settings were tried again

    # every complete trial is a candidate of its own, made by one run, scored on validation and test
    project = Project.load(root)
    store = project.store
    complete = [t for t in trials.values() if t.state.name == "COMPLETE"]
    names = {c["name"] for c in store.candidates() if "-tune-" in c["name"]}
    assert {f"tiny-llama:lora-tune-{t.number}" for t in complete} <= names
    assert names <= {f"tiny-llama:lora-tune-{n}" for n in trials}  # the cut trial may have saved its model
    for t in complete:
        cand = store.candidate(t.user_attrs["candidate"])
        assert cand["run_id"] == t.user_attrs["run_id"]
        assert store.latest_metrics(cand["id"], "validation")["rougeL"] == pytest.approx(t.value)
        assert "rougeL" in store.latest_metrics(cand["id"], "test")
        assert cand["config"]["adapt"]["lora"]["r"] == t.params["lora_r"]
        assert cand["config"]["train"]["learning_rate"] == pytest.approx(t.params["learning_rate"])
    adapt_runs = [r for r in store.runs("adapt", limit=100) if r["status"] == "succeeded"]
    assert len(adapt_runs) == len(complete)  # one fine-tune per complete trial: none repeated
    # the board ranks them by its one rule: the best is the top test score among the scored candidates
    board = project.status()
    scored = {c.name: c.metrics["rougeL"] for c in board.candidates if c.split == "test"}
    assert board.best == result["board_best"] and scored[board.best] == max(scored.values())
    best = max(complete, key=lambda t: t.value)
    # tiny random models often tie on validation: the best trial is one with the top value
    assert trials[result["best_trial"]].value == best.value
    assert result["best_candidate"] == f"tiny-llama:lora-tune-{result['best_trial']}"


def test_a_trial_worse_than_the_median_is_pruned_at_its_first_validation_loss(tmp_path):
    from odyssey.tune.search import finished, open_study, run_trial, search_space

    project = _project(
        tmp_path / "p",
        "tune:\n  eval_every: 1\n  prune_startup_trials: 1\n  space:\n    learning_rate: [1.0e-2, 100.0]\n",
    )
    tspec = project.spec.tune
    dims = search_space(tspec.space, "lora", project.spec.adapt)
    study, _ = open_study(project, "prune", tspec, dims)
    # 1e-2 is what learns in 3 LoRA steps of a tiny random model (val loss 6.91 -> 6.82 at step 1); at
    # 1e-3 the loss barely moves, and a final norm keeps lr=100's garbage near ln(vocab), so the two tied
    study.enqueue_trial({"learning_rate": 1.0e-2})
    study.enqueue_trial({"learning_rate": 100.0})  # garbage weights: worse than the first trial at step 1
    for _ in range(2):
        run_trial(project, study, dims, slug="tiny-llama", method="lora", model=None, max_steps=3, limit=2, engine=None)
    first, second = study.get_trials(deepcopy=False)
    assert first.state.name == "COMPLETE" and second.state.name == "PRUNED" and finished(study) == 2
    assert list(second.intermediate_values) == [1]  # stopped at step 1 of 3
    assert second.intermediate_values[1] < first.intermediate_values[1]  # (negated losses: lower is worse)
    store = project.store
    assert store.candidate("tiny-llama:lora-tune-1") is None  # a pruned trial makes no candidate
    failed = [r for r in store.runs("adapt", limit=10) if r["status"] == "failed"]
    assert len(failed) == 1 and "pruned trial 1 at step 1" in failed[0]["error"]


@pytest.mark.parametrize(
    ("tune", "words"),
    [
        ("tune:\n  space: {}\n", "odyssey.yaml:"),
        ("tune:\n  space:\n    lora_rank: [4, 8]\n", "did you mean 'lora_r'"),
        ("tune:\n  space:\n    learning_rate: [1.0e-3, 1.0e-5, log]\n", "low < high"),
    ],
)
def test_a_bad_search_space_is_a_spec_error_with_its_line(tmp_path, tune, words):
    root = tmp_path / "p"
    tiny_project(root)
    (root / "odyssey.yaml").write_text((root / "odyssey.yaml").read_text() + tune)
    proc = subprocess.run(
        [sys.executable, "-m", "odyssey.cli", "tune", "--project", str(root)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 2 and words in proc.stderr and "tune.space" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (root / ".odyssey" / "tune").exists()


def test_a_search_space_the_method_cannot_use_is_an_error_before_any_work(tmp_path):
    from odyssey.errors import OdysseyError
    from odyssey.tune import tune

    project = _project(tmp_path / "p", "tune:\n  method: full\n  space:\n    lora_r: [4, 8]\n")
    with pytest.raises(OdysseyError, match="lora_r only apply to lora fine-tuning") as caught:
        tune(project)
    assert "tune.method: lora" in caught.value.hint
    project = _project(tmp_path / "q", "tune:\n  space:\n    lora_r: [0, 8]\n")
    with pytest.raises(OdysseyError, match="tune.space.lora_r"):
        tune(project)
    assert not (tmp_path / "p" / ".odyssey" / "tune").exists() and not (tmp_path / "q" / ".odyssey" / "adapt").exists()


def test_a_missing_optuna_names_the_extra(tmp_path, monkeypatch):
    from odyssey.errors import MissingDependency
    from odyssey.tune import tune

    project = _project(tmp_path / "p", "")
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(MissingDependency) as caught:
        tune(project, trials=1)
    assert "llm-odyssey[tune]" in caught.value.hint


def test_a_temp_storage_left_by_a_killed_tune_is_swept_and_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    import optuna

    from odyssey.tune.search import _storage

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".optuna.db.{dead.pid}.tmp"
    live = tmp_path / f".optuna.db.{os.getppid()}.tmp"
    stale.write_text("half-made")
    live.write_text("being built")
    url = _storage(optuna, tmp_path / "optuna.db")
    assert url == f"sqlite:///{tmp_path / 'optuna.db'}" and (tmp_path / "optuna.db").stat().st_size > 0
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "optuna.db"]
