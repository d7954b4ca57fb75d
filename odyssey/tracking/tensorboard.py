"""TensorBoard: each store run as event files in ``<dir>/run-<id>-<stage>/`` (``tensorboard --logdir <dir>``).

Scalars are the run's metrics (``train/loss`` at its training step; a metric logged without a step
counts its own values); a candidate's metrics go to a sub-folder named after it, which TensorBoard
shows as a run of its own. The config, artifacts and summary are text entries (TensorBoard's Text tab).
Written with PyTorch's ``SummaryWriter``, which needs the ``tensorboard`` package.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from odyssey.errors import require
from odyssey.tracking import StepCounter, candidate_lineage, flatten, metric_key, safe_key


def _writer_class():
    require("tensorboard", "tracking", "TensorBoard tracking")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


class TensorBoardListener:
    """A :class:`odyssey.tracking.RunListener` writing event files."""

    def __init__(self, folder: Path, store):
        self.writer_class = _writer_class()  # a missing package is an install hint at once, not mid-run
        self.folder, self.store = Path(folder), store
        self.writers: dict[int, dict] = {}  # run id -> {None: the run's writer, candidate id: its writer}
        self.steps = StepCounter()
        self.broken: set[int] = set()

    def run_dir(self, run_id: int, stage: str) -> Path:
        return self.folder / f"run-{run_id}-{safe_key(stage)}"

    def run_started(self, run_id, stage, spec, config):
        def start():
            writer = self.writer_class(log_dir=str(self.run_dir(run_id, stage)))
            self.writers[run_id] = {None: writer, "dir": self.run_dir(run_id, stage)}
            params = "\n".join(f"| {k} | {v} |" for k, v in flatten(config).items())
            writer.add_text("odyssey/params", "| param | value |\n|---|---|\n" + params, 0)

        self._guard(run_id, start, need_writer=False)

    def _writer(self, run_id: int, candidate_id: int | None):
        writers = self.writers[run_id]
        if candidate_id not in writers:
            lineage = candidate_lineage(self.store, candidate_id)
            name = safe_key(lineage.get("odyssey.candidate", f"candidate-{candidate_id}")).replace("/", "_")
            writers[candidate_id] = self.writer_class(log_dir=str(writers["dir"] / name))
            writers[candidate_id].add_text("odyssey/lineage", json.dumps(lineage, indent=1), 0)
        return writers[candidate_id]

    def metrics_logged(self, run_id, metrics, *, candidate_id=None, split=None, step=None):
        def log():
            writer, now = self._writer(run_id, candidate_id), time.time()
            for name, value in metrics.items():
                key = metric_key(name, split)
                writer.add_scalar(key, float(value), self.steps.step((run_id, candidate_id), key, step), walltime=now)

        self._guard(run_id, log)

    def artifact_added(self, run_id, artifact):
        self._guard(
            run_id,
            lambda: self.writers[run_id][None].add_text(
                f"odyssey/artifacts/{safe_key(artifact['kind'])}",
                f"{artifact['path']} (sha256 {artifact['sha256']})",
                0,
            ),
        )

    def summary_set(self, run_id, summary):
        self._guard(
            run_id,
            lambda: self.writers[run_id][None].add_text(
                "odyssey/summary", "```\n" + json.dumps(summary, indent=1, default=str) + "\n```", 0
            ),
        )

    def run_finished(self, run_id, status, error):
        def close():
            writers = self.writers.pop(run_id)
            writers[None].add_text("odyssey/status", status + (f": {error}" if error else ""), 0)
            for key, writer in writers.items():
                if key != "dir":
                    writer.close()  # flushes: the event files are complete when the run is

        self._guard(run_id, close)

    def _guard(self, run_id, call, *, need_writer: bool = True) -> None:
        if run_id in self.broken or (need_writer and run_id not in self.writers):
            return
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a full disk, a removed folder: never a failed stage
            self.broken.add(run_id)
            from odyssey.ui import OdysseyWarning

            warnings.warn(
                f"tracking: run {run_id} is no longer written to TensorBoard in {self.folder} "
                f"({type(exc).__name__}: {exc})",
                OdysseyWarning,
                stacklevel=2,
            )
