"""MLflow: the store's runs as MLflow runs, live (:class:`MlflowListener`) or afterwards (``export``).

One Odyssey run is one MLflow run in the project's experiment (default: the project's name), named
``<stage> #<run id>`` and tagged ``odyssey.run_id``, ``odyssey.project``, ``odyssey.stage``: its config
as params, the spec as ``odyssey/spec.json``, its metrics (``train/loss`` per training step), artifacts
under ``odyssey/<kind>/`` and the summary as ``odyssey/summary.json``. Metrics logged for a candidate
go to a child run named after the candidate (``mlflow.parentRunId``), tagged with its lineage:
``odyssey.candidate``, ``odyssey.parent``, ``odyssey.model_ref``, ``odyssey.method``, ``odyssey.data_hash``.
A run whose copy finished is tagged ``odyssey.complete=true``; export skips those and replaces the rest.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

from odyssey.errors import OdysseyError, Unavailable, require
from odyssey.tracking import StepCounter, candidate_lineage, flatten, metric_key, safe_key

HEALTH_TIMEOUT_S = 5.0
MAX_ARTIFACT_BYTES = 256 << 20  # bigger files (a model's weights) stay in the store; the run names them
COMPLETE_TAG = "odyssey.complete"
# MLflow's tracking stores (a path without a scheme is a local store too); databricks URIs have no '//'.
TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql")


def _client_environment() -> None:
    """MLflow's client settings, only where the user has set none: stdout stays ours (``--json`` prints
    there, MLflow would print a "View run" link on each run's end), and a server that goes away
    mid-run costs a few seconds of retries instead of MLflow's default of minutes per call."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def check_reachable(uri: str) -> None:
    """A tracking URI with a scheme must use one of MLflow's stores (never gopher://, ftp://, ...), and an
    http(s) one must answer MLflow's /health within seconds: Unavailable otherwise."""
    from odyssey.urls import check_url, looks_like_url

    if looks_like_url(uri):
        check_url(uri, "tracking.mlflow.uri", schemes=TRACKING_SCHEMES)
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None  # the 3xx comes back as an HTTPError: the probe goes nowhere the spec did not name

    try:
        with urllib.request.build_opener(NoRedirects).open(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # something answers (a proxy without /health, auth): the MLflow calls say what is wrong
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unavailable(
            f"tracking.mlflow.uri: the MLflow server at {uri} cannot be reached ({reason})",
            hint="start it (mlflow server --host 127.0.0.1 --port 5000), fix tracking.mlflow.uri in odyssey.yaml, "
            "or run this command untracked with ODYSSEY_TRACKING=off",
        ) from None


class MlflowTarget:
    """One MLflow experiment that the project's runs are copied into, through ``MlflowClient``."""

    def __init__(self, client, experiment_id: str, uri: str):
        self.client, self.experiment_id, self.uri = client, experiment_id, uri

    @classmethod
    def connect(cls, uri: str, experiment: str) -> MlflowTarget:
        require("mlflow", "tracking", "MLflow tracking")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        _client_environment()
        check_reachable(uri)
        try:
            client = MlflowClient(tracking_uri=uri)
        except MlflowException as exc:  # a URI MLflow will not store to, e.g. its retired ./mlruns file store
            raise OdysseyError(
                f"tracking.mlflow.uri: MLflow cannot track to {uri!r}: {exc.message.split('. ')[0]}",
                hint="use a tracking server (http://127.0.0.1:5000) or a database (sqlite:///mlflow.db)",
            ) from None
        try:
            found = client.get_experiment_by_name(experiment)
            if found is not None and found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        except MlflowException as exc:
            raise Unavailable(
                f"tracking.mlflow: MLflow at {uri} refused experiment {experiment!r}: {exc.message}",
                hint="check the server's URI and permissions, or tracking.mlflow.experiment",
            ) from None
        return cls(client, experiment_id, uri)

    # ---- writing ----------------------------------------------------------------------------------
    def create_run(
        self, name: str, tags: dict[str, str], *, start_ms: int | None = None, parent: str | None = None
    ) -> str:
        tags = {k: str(v)[:8000] for k, v in tags.items()}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, start_time=start_ms, tags=tags, run_name=name[:250])
        return run.info.run_id

    def log_params(self, run: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's limit per batch
            self.client.log_batch(run, params=items[i : i + 100])

    def log_metrics(self, run: str, points: list[tuple[str, float, int, int]]) -> None:
        """``points``: (key, value, step, timestamp ms)."""
        from mlflow.entities import Metric

        items = [Metric(key[:250], value, timestamp, step) for key, value, step, timestamp in points]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run, metrics=items[i : i + 1000])

    def log_file(self, run: str, path: Path, folder: str) -> bool:
        path = Path(path)
        if not path.is_file() or path.stat().st_size > MAX_ARTIFACT_BYTES:
            return False
        self.client.log_artifact(run, str(path), folder)
        return True

    def log_dict(self, run: str, data, file: str) -> None:
        self.client.log_text(run, json.dumps(data, indent=1, default=str), file)

    def set_tags(self, run: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run, key, str(value)[:8000])

    def finish(self, run: str, status: str, end_ms: int | None = None) -> None:
        self.client.set_terminated(run, "FINISHED" if status == "succeeded" else "FAILED", end_time=end_ms)

    # ---- reading back (export's idempotence) --------------------------------------------------------
    def runs_tagged(self, kind: str) -> list:
        """Every live run of this experiment with ``odyssey.kind = kind`` (all pages)."""
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`odyssey.kind` = '{kind}'",
                max_results=1000,
                page_token=token,
            )
            out.extend(page)
            token = page.token
            if not token:
                return out

    def delete_with_children(self, run) -> None:
        children = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
        )
        for child in children:
            self.client.delete_run(child.info.run_id)
        self.client.delete_run(run.info.run_id)


class RunCopy:
    """One store run written as an MLflow run (plus a child run per candidate it logs metrics for); used
    by the live listener and by export alike, so both give the same runs."""

    def __init__(self, target: MlflowTarget, store, store_run: dict, *, project: str, root, start_ms=None):
        self.target, self.store, self.run_id = target, store, store_run["id"]
        self.tags = {
            "odyssey.kind": "run",
            "odyssey.run_id": str(self.run_id),
            "odyssey.project": project,
            "odyssey.stage": store_run["stage"],
            "odyssey.root": str(root),
        }
        self.mlflow_id = target.create_run(f"{store_run['stage']} #{self.run_id}", self.tags, start_ms=start_ms)
        self.children: dict[int, str] = {}
        self.steps = StepCounter()

    def params(self, config: dict, spec: dict | None) -> None:
        self.target.log_params(self.mlflow_id, flatten(config))
        if spec:
            self.target.log_dict(self.mlflow_id, spec, "odyssey/spec.json")

    def metrics(self, metrics: dict[str, float], *, candidate_id=None, split=None, step=None, at_ms=None) -> None:
        run = self._child(candidate_id) if candidate_id is not None else self.mlflow_id
        stamp = at_ms or int(time.time() * 1000)
        points = []
        for name, value in metrics.items():
            key = metric_key(name, split)
            points.append((key, float(value), self.steps.step(run, key, step), stamp))
        self.target.log_metrics(run, points)

    def _child(self, candidate_id: int) -> str:
        if candidate_id not in self.children:
            lineage = candidate_lineage(self.store, candidate_id)
            name = lineage.get("odyssey.candidate", f"candidate {candidate_id}")
            tags = {**self.tags, "odyssey.kind": "candidate", "odyssey.candidate_id": str(candidate_id), **lineage}
            self.children[candidate_id] = self.target.create_run(name, tags, parent=self.mlflow_id)
        return self.children[candidate_id]

    def artifact(self, artifact: dict) -> None:
        self.target.log_file(self.mlflow_id, Path(artifact["path"]), f"odyssey/{safe_key(artifact['kind'])}")

    def summary(self, summary: dict) -> None:
        self.target.log_dict(self.mlflow_id, summary, "odyssey/summary.json")

    def finish(self, status: str, error: str | None, *, end_ms=None, complete: bool = True) -> None:
        """Lineage of the candidates the run made, its status, then the runs closed (children first)."""
        made = [c for c in self.store.candidates() if c.get("run_id") == self.run_id]
        tags = {"odyssey.status": status}
        if made:
            tags["odyssey.candidate"] = ",".join(c["name"] for c in made)
            parents = [self.store.candidate(c["parent_id"]) for c in made if c.get("parent_id")]
            if parents:
                tags["odyssey.parent"] = ",".join(dict.fromkeys(p["name"] for p in parents if p))
        if error:
            tags["odyssey.error"] = error[:5000]
        for cand in made:
            self._child(cand["id"])  # a candidate the run made has its lineage run even without metrics
        if complete:
            tags[COMPLETE_TAG] = "true"
        self.target.set_tags(self.mlflow_id, tags)
        for child in self.children.values():
            self.target.set_tags(child, {"odyssey.status": status})
            self.target.finish(child, status, end_ms)
        self.target.finish(self.mlflow_id, status, end_ms)


class MlflowListener:
    """The store's runs copied to MLflow as they happen (a :class:`odyssey.tracking.RunListener`)."""

    def __init__(self, target: MlflowTarget, store, *, project: str, root):
        self.target, self.store, self.project, self.root = target, store, project, root
        self.copies: dict[int, RunCopy] = {}
        self.broken: set[int] = set()  # runs whose copy failed: no more calls for them

    def run_started(self, run_id, stage, spec, config):
        def start():
            copy = RunCopy(
                self.target, self.store, {"id": run_id, "stage": stage}, project=self.project, root=self.root
            )
            self.copies[run_id] = copy
            copy.params(config, spec)

        self._guard(run_id, start, need_copy=False)

    def metrics_logged(self, run_id, metrics, *, candidate_id=None, split=None, step=None):
        self._guard(
            run_id, lambda: self.copies[run_id].metrics(metrics, candidate_id=candidate_id, split=split, step=step)
        )

    def artifact_added(self, run_id, artifact):
        self._guard(run_id, lambda: self.copies[run_id].artifact(artifact))

    def summary_set(self, run_id, summary):
        self._guard(run_id, lambda: self.copies[run_id].summary(summary))

    def run_finished(self, run_id, status, error):
        self._guard(run_id, lambda: self.copies.pop(run_id).finish(status, error))

    def _guard(self, run_id, call, *, need_copy: bool = True) -> None:
        """Tracking never fails a stage once its run has begun: one warning, then that run is left to
        ``odyssey track export`` (its copy is not tagged complete, so export replaces it)."""
        if run_id in self.broken or (need_copy and run_id not in self.copies):
            return
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the MLflow client raises many kinds (HTTP, REST, OS)
            self.broken.add(run_id)
            self.copies.pop(run_id, None)
            from odyssey.ui import OdysseyWarning

            message = exc.message if isinstance(exc, OdysseyError) else f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"tracking: run {run_id} is no longer copied to MLflow at {self.target.uri} ({message}); "
                "the store keeps everything: `odyssey track export` copies it later",
                OdysseyWarning,
                stacklevel=2,
            )
