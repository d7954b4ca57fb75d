"""Experiment tracking against the real things: a tiny:llama LoRA fine-tune tracked live to an ``mlflow
server`` started here (read back with MlflowClient) and to TensorBoard event files (read back with
TensorBoard's EventAccumulator); ``odyssey track export`` of runs made untracked; an unreachable URI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from odyssey.project import Project
from tests.conftest import REPO, tiny_project

ADAPT = (
    "adapt:\n  method: lora\n  learning_rate: 0.01\n  eval_every: 1\n  max_seq_len: 96\n  batch_tokens: 384\n"
    "  val_limit: 4\n"
)


def _project(root: Path, tracking: str = "") -> Project:
    tiny_project(root)
    spec = (root / "odyssey.yaml").read_text().replace("max_new_tokens: 60", "max_new_tokens: 6")
    (root / "odyssey.yaml").write_text(spec + ADAPT + tracking)
    return Project.load(root)


def _finetune(project, steps=3):
    from odyssey.adapt import finetune

    return finetune(project, max_steps=steps, limit=2)


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(client, experiment: str, filter_string: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000)


def test_a_finetune_is_tracked_live_to_mlflow_and_tensorboard(tmp_path, mlflow_server):
    project = _project(
        tmp_path / "p", f"tracking:\n  mlflow: {{uri: '{mlflow_server}', experiment: live}}\n  tensorboard: true\n"
    )
    result = _finetune(project)
    store = project.store
    cand = store.candidate("tiny-llama:lora")
    history = json.loads((project.state_dir / "adapt" / "tiny-llama-lora" / "history.json").read_text())
    losses = {h["step"]: h["loss"] for h in history if "loss" in h}
    steps = sorted(losses)  # every log_every steps, and the last
    assert steps[-1] == 3 and len(steps) >= 2

    client = _client(mlflow_server)
    [run] = _runs(client, "live", f"tags.`odyssey.run_id` = '{result.run_id}' and tags.`odyssey.kind` = 'run'")
    assert run.info.status == "FINISHED" and run.data.tags["odyssey.complete"] == "true"
    assert run.data.tags["odyssey.stage"] == "adapt" and run.data.tags["odyssey.project"] == project.spec.name
    # params: the run's config, flattened
    assert run.data.params["method"] == "lora" and run.data.params["train.max_steps"] == "3"
    assert float(run.data.params["train.learning_rate"]) == 0.01
    # a per-step metric history, at the training steps, with the loop's values
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in loss] == steps
    assert [m.value for m in loss] == pytest.approx([losses[s] for s in steps])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/val_loss")] == [1, 2, 3]
    # artifacts: the spec, the run's files, the summary
    files = {a.path for a in client.list_artifacts(run.info.run_id, "odyssey")}
    assert {"odyssey/spec.json", "odyssey/summary.json", "odyssey/train-history"} <= files
    [copied] = client.list_artifacts(run.info.run_id, "odyssey/train-history")
    assert copied.path.endswith("history.json") and copied.file_size == len(
        (project.state_dir / "adapt" / "tiny-llama-lora" / "history.json").read_bytes()
    )
    # lineage: the run names its candidate and parent; the candidate's child run carries its metrics
    assert run.data.tags["odyssey.candidate"] == "tiny-llama:lora"
    assert run.data.tags["odyssey.parent"] == "tiny-llama:zero-shot"
    [child] = _runs(client, "live", f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert child.info.run_name == "tiny-llama:lora" and child.data.tags["odyssey.parent"] == "tiny-llama:zero-shot"
    assert child.data.tags["odyssey.base"] == "tiny:llama" and child.data.tags["odyssey.data_hash"] == result.data_hash
    stored = store.latest_metrics(cand["id"], "validation")
    assert child.data.metrics["validation/rougeL"] == pytest.approx(stored["rougeL"])
    assert child.data.metrics["test/rouge1"] == pytest.approx(store.latest_metrics(cand["id"], "test")["rouge1"])

    # TensorBoard: the same run's event files, read with TensorBoard's own reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = project.state_dir / "tensorboard" / f"run-{result.run_id}-adapt"
    events = EventAccumulator(str(folder))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [e.step for e in scalars] == steps
    assert [e.value for e in scalars] == pytest.approx([losses[s] for s in steps], rel=1e-6)
    assert "odyssey/params/text_summary" in events.Tags()["tensors"]  # the config, as text
    cand_events = EventAccumulator(str(folder / "tiny-llama_lora"))
    cand_events.Reload()
    [rouge] = cand_events.Scalars("validation/rougeL")
    assert rouge.value == pytest.approx(stored["rougeL"], rel=1e-6)


def test_track_export_copies_the_stores_runs_once_with_lineage_and_the_board(tmp_path, mlflow_server):
    project = _project(tmp_path / "q")
    first = _finetune(project, steps=2)
    from odyssey.evaluate import evaluate_candidate

    evaluate_candidate(project, candidate="tiny-llama:lora", split="test", limit=2)
    store = project.store
    run_ids = sorted(r["id"] for r in store.runs(limit=100))

    out = _cli(["track", "export", "--uri", mlflow_server, "--experiment", "exported", "--json"], project.root)
    assert out["exported"] == run_ids and out["skipped"] == [] and out["board"] == "written"
    client = _client(mlflow_server)
    runs = _runs(client, "exported", "tags.`odyssey.kind` = 'run'")
    assert sorted(int(r.data.tags["odyssey.run_id"]) for r in runs) == run_ids
    adapt = next(r for r in runs if r.data.tags["odyssey.run_id"] == str(first.run_id))
    assert adapt.data.tags["odyssey.candidate"] == "tiny-llama:lora"
    assert adapt.data.tags["odyssey.parent"] == "tiny-llama:zero-shot" and adapt.info.status == "FINISHED"
    assert adapt.data.params["method"] == "lora"
    # the store keeps no steps: a copied metric's steps are its values' order (one val_loss per step here)
    assert [m.step for m in client.get_metric_history(adapt.info.run_id, "train/val_loss")] == [0, 1]
    child = next(
        r
        for r in _runs(client, "exported", "tags.`odyssey.kind` = 'candidate'")
        if r.data.tags["mlflow.parentRunId"] == adapt.info.run_id
    )
    cand = store.candidate("tiny-llama:lora")
    assert child.data.metrics["validation/rougeL"] == pytest.approx(
        store.latest_metrics(cand["id"], "validation")["rougeL"]
    )
    [board] = _runs(client, "exported", "tags.`odyssey.kind` = 'board'")
    assert board.data.tags["odyssey.best"] == project.status().best
    assert {a.path for a in client.list_artifacts(board.info.run_id)} >= {"board.json", "board.md"}

    again = _cli(["track", "export", "--uri", mlflow_server, "--experiment", "exported", "--json"], project.root)
    assert again["exported"] == [] and again["skipped"] == run_ids and again["board"] == "unchanged"
    assert len(_runs(client, "exported", "tags.`odyssey.kind` = 'run'")) == len(run_ids)

    # a partial copy (live tracking that lost its server) is replaced, not kept beside the new one
    client.set_tag(adapt.info.run_id, "odyssey.complete", "false")
    third = _cli(["track", "export", "--uri", mlflow_server, "--experiment", "exported", "--json"], project.root)
    assert third["replaced"] == [first.run_id] and third["exported"] == []
    assert len(_runs(client, "exported", "tags.`odyssey.kind` = 'run'")) == len(run_ids)


def _cli(args, cwd: Path, env=None, code: int = 0) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "odyssey.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=600,
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    return json.loads(proc.stdout) if "--json" in args and code == 0 else {"stderr": proc.stderr}


def test_an_unreachable_tracking_server_stops_the_command_at_its_start(tmp_path):
    from tests.tracking.conftest import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    project = _project(tmp_path / "r", f"tracking:\n  mlflow: {{uri: '{uri}'}}\n")
    out = _cli(["finetune", "--max-steps", "1"], project.root, code=5)
    assert f"tracking.mlflow.uri: the MLflow server at {uri} cannot be reached" in out["stderr"]
    assert "ODYSSEY_TRACKING=off" in out["stderr"] and "Traceback" not in out["stderr"]
    assert not (project.state_dir / "adapt").exists()  # no work started
    # ODYSSEY_TRACKING=off: the same project works, untracked
    board = _cli(["status", "--json"], project.root, env={"ODYSSEY_TRACKING": "off"})
    assert board["project"] == project.spec.name


def test_a_file_store_uri_is_a_user_error_with_the_database_hint(tmp_path):
    project = _project(tmp_path / "f", "")
    out = _cli(["track", "export", "--uri", "./mlruns"], project.root, code=2)
    assert "tracking.mlflow.uri: MLflow cannot track to './mlruns'" in out["stderr"]
    assert "sqlite:///mlflow.db" in out["stderr"] and "Traceback" not in out["stderr"]


def test_a_missing_tracking_package_names_the_extra(tmp_path, monkeypatch):
    from odyssey.errors import MissingDependency

    project = _project(tmp_path / "s", "tracking:\n  tensorboard: {dir: tb}\n")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MissingDependency) as caught:
        _ = project.store  # opening the store installs the listeners
    assert "llm-odyssey[tracking]" in caught.value.hint and "tensorboard" in caught.value.message
