"""lm-eval through Odyssey's loader: the shipped local tasks, scores stored, agreement with a hand count."""

from __future__ import annotations

import json

import pytest

from odyssey.errors import OdysseyError
from tests.conftest import tiny_project

pytest.importorskip("lm_eval")


def test_local_tasks_are_listed_and_valid():
    from odyssey.select.benchmarks import TASKS_DIR, local_tasks

    assert local_tasks() == ["boolq-mini", "capitals", "mini-mmlu"]
    rows = [json.loads(line) for line in (TASKS_DIR / "mini_mmlu.jsonl").read_text().splitlines()]
    answers = [r["answer"] for r in rows]
    assert len(rows) == 40 and all(answers.count(i) == 10 for i in range(4))  # a constant guess scores 25 %
    labels = [json.loads(line)["label"] for line in (TASKS_DIR / "boolq_mini.jsonl").read_text().splitlines()]
    assert labels.count(0) == labels.count(1) == 20


def _hand_accuracy(loaded, n: int) -> float:
    """Multiple-choice accuracy counted by hand: the choice whose tokens are most likely after the prompt."""
    import torch

    from odyssey.select.benchmarks import TASKS_DIR

    rows = [json.loads(line) for line in (TASKS_DIR / "mini_mmlu.jsonl").read_text().splitlines()][:n]
    tok, model = loaded.tokenizer, loaded.model
    right = 0
    for r in rows:
        context = (
            "The following are multiple choice questions with answers.\n\n"
            + f"Question: {r['question']}\n"
            + "".join(f"{letter}. {c}\n" for letter, c in zip("ABCD", r["choices"]))
            + "Answer:"
        )
        scores = []
        for letter in " A", " B", " C", " D":
            whole = tok(context + letter, add_special_tokens=False)["input_ids"]
            ctx = tok(context, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([whole])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            targets = ids[0, len(ctx) :]
            scores.append(float(logp[len(ctx) - 1 + torch.arange(len(targets)), targets].sum()))
        right += int(max(range(4), key=lambda i: scores[i]) == r["answer"])
    return right / len(rows)


def test_benchmark_tiny_model_matches_hand_count(tmp_path, capfd, monkeypatch):
    from odyssey.models import load
    from odyssey.project import Project
    from odyssey.select import run_benchmarks
    from odyssey.store.select import benchmark_scores

    project = Project.load(tiny_project(tmp_path / "proj"))
    loaded = load("tiny:gpt2")
    monkeypatch.chdir(tmp_path)  # outside a git repository, as a user's project usually is
    capfd.readouterr()
    result = run_benchmarks(["local:mini-mmlu", "local:capitals"], loaded=loaded, project=project, limit=8)
    printed = capfd.readouterr()
    # lm-eval's own tqdm bars and its `git describe` probe stay off the terminal
    assert "Running" not in printed.err and "fatal:" not in printed.err, printed.err
    acc = result.score("mini-mmlu", "acc")
    assert acc == pytest.approx(_hand_accuracy(loaded, 8))
    assert result.score("capitals", "exact_match") == 0.0  # a random model names no capital
    stored = benchmark_scores(project.store, "tiny:gpt2")
    assert {(s["task"], s["metric"]) for s in stored} == {("mini-mmlu", "acc"), ("capitals", "exact_match")}
    assert all(s["n_samples"] == 8 for s in stored)


def test_benchmark_errors():
    from odyssey.select import run_benchmarks

    with pytest.raises(OdysseyError, match="unknown local benchmark task"):
        run_benchmarks(["local:trivia"], model="tiny:llama")
    with pytest.raises(OdysseyError, match="encoder-only"):
        run_benchmarks(["local:boolq-mini"], model="tiny:bert", limit=2)


def test_capitals_scores_a_right_answer_as_right(tmp_path):
    """The generation task's filter and metric: an answer in the model's own words (leading space, a
    trailing sentence, another case) counts when the capital is right, and a wrong capital does not."""
    import re
    import tempfile
    from pathlib import Path

    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    from odyssey.select.benchmarks import TASKS_DIR, _materialize

    capitals = {
        json.loads(line)["country"]: json.loads(line)["capital"]
        for line in (TASKS_DIR / "capitals.jsonl").read_text().splitlines()
    }

    class Oracle(LM):  # right on even questions (as " PARIS. It is..."), wrong ("Atlantis") on odd ones
        def generate_until(self, requests):
            out = []
            for i, request in enumerate(requests):
                country = re.findall(r"capital of (.+?)\?", request.args[0])[-1]
                out.append(f" {capitals[country].upper()}. It is a city." if i % 2 == 0 else " Atlantis")
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    with tempfile.TemporaryDirectory() as tmp:
        manager = TaskManager(include_path=str(_materialize(Path(tmp))), include_defaults=False, verbosity="ERROR")
        out = lm_eval.simple_evaluate(
            model=Oracle(), tasks=["capitals"], task_manager=manager, limit=10, verbosity="ERROR"
        )
    assert out["results"]["capitals"]["exact_match,strip"] == pytest.approx(0.5)
