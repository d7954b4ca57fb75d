"""The loop's checkpoints: what is saved, how it is written, and how a run resumes from it.

A checkpoint is a folder ``output_dir/checkpoints/step-N/`` (or ``output_dir/best/``):

- ``model.safetensors``: the trainable parameters only, so a LoRA checkpoint is megabytes;
- ``trainer_state.pt``: optimizer, LR scheduler and torch RNG (loaded with ``weights_only=True``);
  only in ``resume`` checkpoints, not in ``best``;
- ``trainer_state.json``: step, data position, tokens, history, best, evaluations without
  improvement, the losses since the last log line, python/numpy RNG and the settings.

PPO (``odyssey/align/ppo.py``) writes the same folders, with its adapter and value head as the
weights, no scheduler, and its KL coefficient in ``extra``: one format, one resume path.

Folders are written through :func:`odyssey.models.checkpoint.atomic_dir` (a scratch folder renamed
into place), so a ``kill -9`` mid-save never leaves a half checkpoint that ``resume=True`` would
pick up. Resume restores all of it and continues at the same batch: the loss curve is the same as
an uninterrupted run's (``tests/training/test_resume.py`` kills a run).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError
from odyssey.models.checkpoint import atomic_dir

CHECKPOINTS = "checkpoints"
BEST = "best"
WEIGHTS_FILE = "model.safetensors"
STATE_PT = "trainer_state.pt"
STATE_JSON = "trainer_state.json"

# Fields that change the loss curve: resuming with a different value would not continue the same run.
CURVE_FIELDS = (
    "learning_rate",
    "lr_scheduler",
    "warmup_steps",
    "weight_decay",
    "batch_size",
    "batch_tokens",
    "grad_accum",
    "max_grad_norm",
    "seed",
)

_STEP_FOLDER = re.compile(r"step-(\d+)")  # a finished periodic checkpoint (scratch folders have a suffix)


@dataclass
class TrainState:
    """Where a run is: everything besides weights, optimizer, scheduler and RNG that resume restores."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # the next batch of the epoch
    tokens: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"step", "metric", "value", "path"}
    bad_evals: int = 0  # evaluations since the best one
    window: dict[str, list[float]] = field(default_factory=dict)  # values since the last log line
    extra: dict = field(default_factory=dict)  # a recipe's own state (PPO: the adaptive KL coefficient)


def step_of(folder: Path) -> int | None:
    """N for a finished ``step-N`` folder; None for anything else (a scratch folder, a stray file)."""
    match = _STEP_FOLDER.fullmatch(folder.name)
    return int(match.group(1)) if match else None


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint folder under ``output_dir/checkpoints``, if any."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.exists():
        return None
    done = [p for p in root.iterdir() if step_of(p) is not None and (p / STATE_JSON).exists()]
    return max(done, key=step_of, default=None)


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` periodic checkpoints; drop scratch folders a killed save left behind."""
    root = Path(output_dir) / CHECKPOINTS
    finished = sorted((p for p in root.iterdir() if step_of(p) is not None), key=step_of)
    scratch = [p for p in root.iterdir() if p.is_dir() and step_of(p) is None and p.name.startswith("step-")]
    for stale in finished[:-keep] + scratch:
        shutil.rmtree(stale, ignore_errors=True)


def trainable_tensors(model, names: Iterable[str]) -> dict:
    """The named parameters' current values, detached, contiguous and on the CPU (what a checkpoint saves)."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().contiguous().cpu() for n in names}


def load_weights(model, path: Path) -> list[str]:
    """Copy the tensors of a safetensors file into the model's parameters of the same names."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = [n for n in tensors if n not in params]
    if unknown:
        raise OdysseyError(
            f"checkpoint {path} has weights the model does not: {unknown[:3]}",
            hint="resume with the same model and method the checkpoint was made with",
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    return list(tensors)


def rng_state() -> tuple[dict, dict]:
    """(tensors for ``trainer_state.pt``: torch and CUDA RNG; JSON-able: python and numpy RNG)."""
    import numpy as np
    import torch

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    py = random.getstate()
    np_state = np.random.get_state()
    plain = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, plain


def set_rng_state(tensors: dict, plain: dict):
    import numpy as np
    import torch

    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])
    py = plain["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    state = plain["numpy"]
    np.random.set_state((state[0], np.array(state[1], dtype=np.uint32), state[2], state[3], state[4]))


def write_checkpoint(
    folder: Path, kind: str, state: TrainState, weights: dict, config: dict, optimizer=None, scheduler=None
) -> Path:
    """``weights`` (name -> tensor) + state into ``folder``, atomically. ``kind`` 'resume' also saves
    the optimizer, scheduler (if any) and RNG, everything an exact resume needs; 'best' only the
    weights and the state."""
    import torch
    from safetensors.torch import save_file

    with atomic_dir(folder) as tmp:
        save_file(weights, str(tmp / WEIGHTS_FILE))
        plain: dict = {}
        if kind == "resume":
            tensors, plain = rng_state()
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": tensors,
                },
                tmp / STATE_PT,
            )
        values = asdict(state)
        window = values.pop("window")
        (tmp / STATE_JSON).write_text(
            json.dumps(
                {**values, "rng": plain, "config": config, "window": window, "trainable": list(weights), "kind": kind},
                default=str,
            )
        )
    return folder


def read_checkpoint(folder: Path, config: dict, restore_weights, optimizer, scheduler=None) -> TrainState:
    """Restore a 'resume' checkpoint: ``restore_weights(path)`` loads the weights file into the model,
    then the optimizer, scheduler (if any) and RNG are restored; returns the run's state.

    Refused when a setting that shapes the loss curve (:data:`CURVE_FIELDS`) differs from the
    interrupted run's: the result would not be that run continued."""
    import torch

    saved = json.loads((folder / STATE_JSON).read_text())
    before = saved.get("config", {})
    changed = [k for k in CURVE_FIELDS if k in before and before[k] != config[k]]
    if changed:
        raise OdysseyError(
            f"cannot resume from {folder}: " + ", ".join(f"{k} was {before[k]!r}, now {config[k]!r}" for k in changed),
            hint="resume with the settings of the interrupted run, or start afresh without --resume",
        )
    restore_weights(folder / WEIGHTS_FILE)
    tensors = torch.load(folder / STATE_PT, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(tensors["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(tensors["scheduler"])
    set_rng_state(tensors["rng"], saved["rng"])
    # the window holds the losses since the last log line, so the next line averages the same values
    return TrainState(
        step=saved["step"],
        epoch=saved["epoch"],
        position=saved["position"],
        tokens=saved["tokens"],
        history=saved["history"],
        best=saved["best"],
        bad_evals=saved.get("bad_evals", 0),
        window=saved.get("window", {}),
        extra=saved.get("extra", {}),
    )
