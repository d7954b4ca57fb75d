"""Benchmarks with lm-evaluation-harness (``lm-eval``) through Odyssey's model loader.

Any candidate or model reference is loaded by :func:`odyssey.models.load` (packaged GGUFs, local
checkpoints, pretrained candidates...) and handed to lm-eval's ``HFLM`` as a ready model instance, so
lm-eval's own scoring (log-likelihood of choices, greedy generation, filters, metrics) runs unchanged.

Tasks: ``local:<name>`` are the tasks shipped in ``odyssey/select/data/tasks`` (mini-mmlu, boolq-mini,
capitals); any other name is an lm-eval task (hub datasets: online only).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey import ui
from odyssey.errors import OdysseyError, require

TASKS_DIR = Path(__file__).parent / "data" / "tasks"


def local_tasks() -> list[str]:
    import yaml

    return [yaml.safe_load(p.read_text())["task"] for p in sorted(TASKS_DIR.glob("*.yaml"))]


def _materialize(folder: Path) -> Path:
    """Copy the shipped task YAMLs with their data path filled in (lm-eval resolves data files from the
    working directory, not from the YAML's folder)."""
    for path in TASKS_DIR.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text().replace("__DATA__", str(TASKS_DIR.resolve())))
    return folder


@dataclass
class BenchmarkResult:
    model_ref: str
    scores: list[dict]
    run_id: int | None = None
    samples: dict = field(default_factory=dict)

    def score(self, task: str, metric: str | None = None) -> float | None:
        for s in self.scores:
            if s["task"] == task and (metric is None or s["metric"] == metric):
                return s["value"]
        return None

    def as_dict(self) -> dict:
        return asdict(self)


def odyssey_lm(loaded, batch_size: int = 8):
    """lm-eval's HFLM around a model Odyssey loaded (decoder-only or encoder-decoder)."""
    require("lm_eval", "select", "odyssey benchmark")
    from lm_eval.models.huggingface import HFLM

    from odyssey.models import FAMILY_ENCODER, FAMILY_SEQ2SEQ

    if loaded.family == FAMILY_ENCODER:
        raise OdysseyError(
            f"{loaded.ref} is an encoder-only model: lm-eval's tasks score text likelihood or "
            "generation, which needs a decoder",
            hint="benchmark a decoder-only or encoder-decoder model",
        )
    backend = "seq2seq" if loaded.family == FAMILY_SEQ2SEQ else "causal"

    class QuietHFLM(HFLM):
        """HFLM without its tqdm bars: it passes ``disable=`` itself, so TQDM_DISABLE cannot reach them, and
        they would print over Odyssey's status line (ui.verbose() keeps them)."""

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=disable_tqdm or not ui.verbose())

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not ui.verbose())

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm or not ui.verbose())

    return QuietHFLM(
        pretrained=loaded.model,
        tokenizer=loaded.tokenizer,
        backend=backend,
        batch_size=batch_size,
        max_length=min(loaded.context_length, 4096),
    )


@contextlib.contextmanager
def _no_git_probe():
    """lm-eval records its caller's commit with ``git describe`` in the current folder; outside a repository
    git prints "fatal: not a git repository" on the terminal. The commit is not what Odyssey records."""
    import lm_eval.evaluator

    original = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = original


def run_benchmarks(
    tasks: list[str],
    *,
    model: str | None = None,
    candidate: str | None = None,
    project=None,
    limit: int | None = None,
    batch_size: int = 8,
    loaded=None,
) -> BenchmarkResult:
    """Run lm-eval tasks on a model; scores are recorded in the project's store when there is a project."""
    require("lm_eval", "select", "odyssey benchmark")
    import lm_eval  # noqa: F401  (before the model loads: importing it sets Hugging Face download settings)

    from odyssey.models import load

    if not tasks:
        raise OdysseyError("no benchmark tasks given", hint=f"e.g. --tasks local:{',local:'.join(local_tasks())}")
    ref = _model_ref(model, candidate, project, loaded)
    names = _task_names(tasks)
    root = project.root if project is not None else None
    if loaded is None:
        with ui.status(f"loading {ref}") as update:
            loaded = load(ref, root=root, progress=update)
    ref = ref or loaded.ref
    lm = odyssey_lm(loaded, batch_size)
    out = _evaluate(lm, tasks, names, limit, ref)
    scores = _scores(out)
    result = BenchmarkResult(ref, scores)
    if project is not None:
        result.run_id = _record(project, ref, names, limit, candidate, scores)
    return result


def _model_ref(model: str | None, candidate: str | None, project, loaded) -> str | None:
    """The reference to benchmark: the candidate's model, else ``model``, else the project's default model
    (None when a loaded model is handed in instead)."""
    ref = model
    if candidate:
        if project is None:
            raise OdysseyError("--candidate needs a project", hint="run inside a project folder or pass -p")
        row = project.store.candidate(candidate)
        if row is None:
            raise OdysseyError(
                f"no candidate named {candidate!r}",
                hint=f"candidates: {', '.join(c['name'] for c in project.store.candidates()) or 'none'}",
            )
        ref = row["model_ref"]
    if ref is None and loaded is None:
        if project is None:
            raise OdysseyError("no model to benchmark", hint="pass --model REF or --candidate NAME")
        ref = project.default_model()
    return ref


def _task_names(tasks: list[str]) -> list[str]:
    """lm-eval task names: ``local:<name>`` checked against the shipped tasks, others passed through."""
    known = set(local_tasks())
    names = []
    for task in tasks:
        if task.startswith("local:"):
            name = task.split(":", 1)[1]
            if name not in known:
                raise OdysseyError(
                    f"unknown local benchmark task {name!r}",
                    hint=f"shipped tasks: {', '.join('local:' + k for k in sorted(known))}",
                )
            names.append(name)
        else:
            names.append(task)
    return names


def _evaluate(lm, tasks: list[str], names: list[str], limit: int | None, ref: str) -> dict:
    """lm-eval's ``simple_evaluate`` on the tasks, with the shipped ones materialized for it."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="odyssey-tasks-") as tmp:
        # Indexing lm-eval's thousands of built-in task YAMLs takes a while: only when a non-local task is asked.
        hub_tasks = any(not t.startswith("local:") for t in tasks)
        manager = TaskManager(include_path=str(_materialize(Path(tmp))), include_defaults=hub_tasks, verbosity="ERROR")
        missing = [n for n in names if n not in manager.all_tasks]
        if missing:
            raise OdysseyError(
                f"lm-eval does not know the task(s) {', '.join(missing)}",
                hint="check the name (lm-eval --tasks list) or use local:mini-mmlu, local:boolq-mini, local:capitals",
            )
        with ui.status(f"lm-eval: {', '.join(names)} on {ref}"), _no_git_probe():
            return lm_eval.simple_evaluate(
                model=lm, tasks=names, task_manager=manager, limit=limit, log_samples=False, verbosity="ERROR"
            )


def _scores(out: dict) -> list[dict]:
    """One row per task, metric and filter from lm-eval's results (stderr beside its metric, not a row)."""
    scores = []
    n_samples = out.get("n-samples", {})
    for task, metrics in out["results"].items():
        for key, value in metrics.items():
            if "," not in key or "stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            scores.append(
                {
                    "task": task,
                    "metric": metric,
                    "filter": filt,
                    "value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                    "n_samples": (n_samples.get(task) or {}).get("effective"),
                }
            )
    return scores


def _record(project, ref: str, names: list[str], limit: int | None, candidate: str | None, scores) -> int:
    """The scores in the project's store, as a select run; returns the run's id."""
    from odyssey.store.select import add_benchmark_scores

    with project.store.run(
        "select", project.spec.as_dict(), {"action": "benchmark", "model": ref, "tasks": names, "limit": limit}
    ) as run:
        add_benchmark_scores(project.store, run.id, ref, scores)
        cand = project.store.candidate(candidate) if candidate else None
        run.log_metrics(
            {f"bench/{s['task']}/{s['metric']}": s["value"] for s in scores},
            candidate_id=cand["id"] if cand else None,
            split="benchmark",
        )
        run.set_summary({"model": ref, "scores": scores})
    return run.id
