"""The one training loop every stage reuses: :func:`train` with a loss function you supply.

Methods that differ only in their loss share everything else here: batching (by examples or by a
token budget), gradient accumulation, clipping, the LR schedule, mixed precision, gradient
checkpointing, periodic evaluation, early stopping with the best checkpoint kept, safetensors
checkpoints with exact resume, a progress bar with the loss in it, and several processes under
``accelerate launch`` / ``torchrun`` (DDP; FSDP and DeepSpeed configs pass through accelerate).

How a stage uses it::

    from odyssey.training import TrainConfig, train

    def loss_fn(model, batch):                  # model: the (possibly DDP-wrapped) module to call
        out = model(**batch)
        return out.loss, {"tokens": int(batch["labels"].ne(-100).sum())}

    def eval_fn(model):                         # called under torch.no_grad() with model.eval()
        return {"val_loss": ...}

    result = train(model, examples, loss_fn, TrainConfig(output_dir=run_dir, max_steps=200),
                   eval_fn=eval_fn, collate_fn=my_collate)

- ``train_data`` is any sequence (list, ``datasets.Dataset``...). Each epoch it is shuffled with
  ``seed + epoch`` and cut into batches of ``batch_size`` items, or, when ``batch_tokens`` is set,
  into batches of at most that many tokens (``length_fn(item)``, default ``len(item["input_ids"])``).
  ``collate_fn(items) -> batch`` builds tensors; they are moved to the device for you.
- ``loss_fn(model, batch) -> (loss, metrics)``: ``loss`` is a scalar tensor (mean over the batch),
  ``metrics`` a dict of floats averaged into the log. The key ``tokens`` is special: it counts the
  tokens trained on (for throughput); without it, items count as tokens.
- Stages plug in like this: SFT (``odyssey.adapt.finetune``) returns the completion-token
  cross-entropy; a reward model returns the pairwise ``-logsigmoid(r_chosen - r_rejected)``; PPO
  value pretraining returns an MSE on returns; distillation returns ``KL(teacher || student)`` on
  the completion logits (the teacher lives in the closure of ``loss_fn``); pruning recovery is
  plain SFT on the pruned model; pretraining (clm/mlm/span) returns the model's own LM loss over
  ``collate_fn`` batches of the objective. ``trainable_params`` restricts what is optimized
  (default: parameters with ``requires_grad``); pass torch-style param-group dicts for per-group LRs.

Checkpoints (every ``save_every`` steps and at the end) go to ``output_dir/checkpoints/step-N/``:
``model.safetensors`` (the trainable parameters only, so a LoRA checkpoint is megabytes),
``trainer_state.pt`` (optimizer, scheduler and torch RNG; loaded with ``weights_only=True``) and
``trainer_state.json`` (step, data position, history, best, python/numpy RNG). Folders are written
under a temporary name and renamed, so a ``kill -9`` mid-save never leaves a half checkpoint that
``resume=True`` would pick up. Resume restores all of it and continues at the same batch: the loss
curve is the same as an uninterrupted run's (``tests/training/test_resume.py`` kills a run).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from odyssey.errors import OdysseyError
from odyssey.models.memory import peak_rss_gb, rss_gb  # noqa: F401  (one implementation; rss_gb re-exported)

CHECKPOINTS = "checkpoints"
BEST = "best"
WEIGHTS_FILE = "model.safetensors"
STATE_PT = "trainer_state.pt"
STATE_JSON = "trainer_state.json"

# Fields that change the loss curve: resuming with a different value would not continue the same run.
_CURVE_FIELDS = ("learning_rate", "lr_scheduler", "warmup_steps", "weight_decay", "batch_size", "batch_tokens",
                 "grad_accum", "max_grad_norm", "seed")


@dataclass
class TrainConfig:
    """Settings of one training run. Every field has a default that works on a CPU."""

    output_dir: str | Path = "odyssey-train"
    max_steps: int | None = None  # optimizer steps; when None, ``epochs`` passes over the data
    epochs: float = 1.0
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"  # cosine | linear | constant (any transformers.get_scheduler name)
    warmup_steps: int = 0
    weight_decay: float = 0.0  # not applied to biases and norms (parameters with fewer than 2 dims)
    batch_size: int = 8  # items per (global) batch
    batch_tokens: int | None = None  # instead: at most this many tokens per batch (needs length_fn)
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    seed: int = 0
    precision: str = "auto"  # auto (fp32 on CPU, bf16 on a capable GPU) | fp32 | bf16 | fp16
    gradient_checkpointing: bool = False
    log_every: int = 10
    eval_every: int | None = None  # steps; None: only at the end (when eval_fn is given)
    save_every: int | None = 100  # steps; a checkpoint is always written at the end
    save_total_limit: int | None = 2  # periodic checkpoints kept (the newest)
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    metric_for_best: str = "val_loss"
    greater_is_better: bool = False
    keep_best: bool = True  # save the best weights to output_dir/best and load them at the end
    optimizer: str = "adamw"  # adamw | sgd
    adam_betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        checks = [
            ("max_steps", self.max_steps is None or self.max_steps >= 1, "a positive number of steps or None"),
            ("epochs", self.epochs > 0, "a positive number"),
            ("learning_rate", self.learning_rate >= 0, "a non-negative number"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("batch_tokens", self.batch_tokens is None or self.batch_tokens >= 1, "at least 1 or None"),
            ("grad_accum", self.grad_accum >= 1, "at least 1"),
            ("log_every", self.log_every >= 1, "at least 1"),
            ("precision", self.precision in {"auto", "fp32", "bf16", "fp16"}, "auto, fp32, bf16 or fp16"),
            ("optimizer", self.optimizer in {"adamw", "sgd"}, "adamw or sgd"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise OdysseyError(f"training setting {name}={getattr(self, name)!r} is invalid: expected {expected}",
                                   hint=f"fix {name} in the stage's section of odyssey.yaml")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["output_dir"] = str(self.output_dir)
        out["adam_betas"] = list(self.adam_betas)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    steps: int
    tokens: int
    wall_s: float
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"step", "metric", "value", "path"}
    final_path: Path | None = None  # the last checkpoint folder
    peak_memory_gb: float = 0.0  # CUDA: max allocated; CPU: the process's peak resident set during training
    stopped_early: bool = False
    resumed_from: int | None = None  # the step a resumed run continued from
    trainable_params: int = 0
    total_params: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def final_loss(self) -> float | None:
        losses = [h["loss"] for h in self.history if "loss" in h]
        return losses[-1] if losses else None

    def evals(self) -> list[dict]:
        return [h for h in self.history if any(k.startswith("val") or k.startswith("eval") for k in h)]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["final_path"] = str(self.final_path) if self.final_path else None
        out["tokens_per_s"] = self.tokens_per_s
        return out


# ---- helpers -----------------------------------------------------------------------------------

def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (torchrun / accelerate launch)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def unwrap(model):
    """The module inside a DDP/FSDP wrapper (for attributes such as ``.config``)."""
    return getattr(model, "module", model)


def to_device(batch, device):
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _default_length(item) -> int:
    try:
        return len(item["input_ids"])
    except (TypeError, KeyError) as exc:
        raise OdysseyError("batch_tokens needs the length of each training item",
                           hint="pass length_fn=... to train(), or items with an 'input_ids' list") from exc


def make_batches(n_items: int, config: TrainConfig, epoch: int,
                 lengths: Sequence[int] | None = None) -> list[list[int]]:
    """The batches (lists of item indices) of one epoch: a seeded shuffle, cut by count or token budget."""
    import torch

    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(n_items, generator=generator).tolist()
    if config.batch_tokens is None:
        return [order[i:i + config.batch_size] for i in range(0, n_items, config.batch_size)]
    batches, current, used = [], [], 0
    for index in order:
        length = lengths[index]
        if current and used + length > config.batch_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += length
    if current:
        batches.append(current)
    return batches


class _PeakRSS:
    """Samples the resident set in a thread while training runs: the peak of *this* run, not the process's
    lifetime high-water mark (ru_maxrss), which an earlier step in the same process may have set."""

    def __init__(self, every_s: float = 0.05):
        import threading

        self.peak = rss_gb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s):
        while not self._stop.wait(every_s):
            self.peak = max(self.peak, rss_gb())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_gb())
        return False


def peak_memory_gb(cpu_peak: float | None = None) -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1024**3
    return cpu_peak if cpu_peak is not None else peak_rss_gb()


def _param_groups(model, trainable_params, weight_decay: float) -> list[dict]:
    if trainable_params is not None:
        items = list(trainable_params)
        if items and isinstance(items[0], dict):
            return items
        params = items
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise OdysseyError("nothing to train: no parameter requires a gradient",
                           hint="check the fine-tuning method, or pass trainable_params=")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _trainable_names(model, groups: list[dict]) -> list[str]:
    """Names of the parameters being optimized, in a fixed order (tied weights appear once)."""
    ids = {id(p) for g in groups for p in g["params"]}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def save_weights(model, names: Iterable[str], path: Path):
    from safetensors.torch import save_file

    params = dict(model.named_parameters())
    save_file({n: params[n].detach().contiguous().cpu() for n in names}, str(path))


def load_weights(model, path: Path) -> list[str]:
    """Copy the tensors of a safetensors file into the model's parameters of the same names."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = [n for n in tensors if n not in params]
    if unknown:
        raise OdysseyError(f"checkpoint {path} has weights the model does not: {unknown[:3]}",
                           hint="resume with the same model and method the checkpoint was made with")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    return list(tensors)


def _rng_state() -> tuple[dict, dict]:
    import numpy as np
    import torch

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    py = random.getstate()
    np_state = np.random.get_state()
    plain = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, plain


def _set_rng_state(tensors: dict, plain: dict):
    import numpy as np
    import torch

    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])
    py = plain["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    state = plain["numpy"]
    np.random.set_state((state[0], np.array(state[1], dtype=np.uint32), state[2], state[3], state[4]))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint folder under ``output_dir/checkpoints``, if any."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.exists():
        return None
    done = [p for p in root.glob("step-*") if (p / STATE_JSON).exists() and not p.name.endswith(".tmp")]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _seed_everything(seed: int):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _accelerator(precision: str):
    """An accelerate ``Accelerator``: DDP under several processes, FSDP/DeepSpeed from ``accelerate launch``."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    if mixed != "no" and not torch.cuda.is_available():
        mixed = "no"  # CPUs here have no fast 16-bit units; fp32 is both faster and exact
    AcceleratorState._reset_state()  # train() may run several times in one process with other settings
    return Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available()), mixed


# ---- the loop ----------------------------------------------------------------------------------

def train(model, train_data: Sequence, loss_fn: Callable, config: TrainConfig, *, eval_fn: Callable | None = None,
          collate_fn: Callable | None = None, resume: bool = False, trainable_params=None,
          description: str = "training", on_log: Callable[[dict], Any] | None = None,
          length_fn: Callable[[Any], int] | None = None) -> TrainResult:
    """Train ``model`` on ``train_data`` by minimizing ``loss_fn``; see the module docstring."""
    import torch
    from torch.utils.data import default_collate
    from transformers import get_scheduler

    from odyssey.ui import progress

    config = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    n_items = len(train_data)
    if n_items == 0:
        raise OdysseyError("no training data: the training set is empty",
                           hint="check the train split of scope.data in odyssey.yaml")
    collate_fn = collate_fn or default_collate
    out = Path(config.output_dir)
    accelerator, mixed = _accelerator(config.precision)
    rank, world_size = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)

    lengths = None
    if config.batch_tokens is not None:
        length_fn = length_fn or _default_length
        lengths = [int(length_fn(item)) for item in train_data]

    batches_per_epoch = len(make_batches(n_items, config, 0, lengths))
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / config.grad_accum))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))

    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is None:
        _seed_everything(config.seed)
    if config.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # adapters on a frozen base need grads flowing into layer 0
    model.train()

    groups = _param_groups(model, trainable_params, config.weight_decay)
    names = _trainable_names(model, groups)
    n_trainable = sum(p.numel() for g in groups for p in g["params"])
    n_total = sum(p.numel() for p in model.parameters())
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, betas=tuple(config.adam_betas))
    else:
        optimizer = torch.optim.SGD(groups, lr=config.learning_rate)
    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                              num_training_steps=total_steps)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(wrapped)

    step, epoch, position, tokens = 0, 0, 0, 0
    window: dict[str, list[float]] = {}
    history: list[dict] = []
    best: dict | None = None
    bad_evals = 0
    resumed_from = None
    if checkpoint is not None:
        state_json = json.loads((checkpoint / STATE_JSON).read_text())
        saved = state_json.get("config", {})
        changed = [k for k in _CURVE_FIELDS if k in saved and saved[k] != config.as_dict()[k]]
        if changed:
            raise OdysseyError(
                f"cannot resume from {checkpoint}: "
                + ", ".join(f"{k} was {saved[k]!r}, now {config.as_dict()[k]!r}" for k in changed),
                hint="resume with the settings of the interrupted run, or start afresh without --resume")
        load_weights(inner, checkpoint / WEIGHTS_FILE)
        state = torch.load(checkpoint / STATE_PT, weights_only=True, map_location="cpu")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], state_json["rng"])
        step, epoch, position = state_json["step"], state_json["epoch"], state_json["position"]
        tokens, history, best = state_json["tokens"], state_json["history"], state_json["best"]
        bad_evals = state_json.get("bad_evals", 0)
        window = state_json.get("window", {})  # losses since the last log line, so the next one averages the same
        resumed_from = step

    def write_checkpoint(folder: Path, kind: str):
        """Weights + state under a temporary name, then renamed: never half-written."""
        if not main:
            return
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_weights(inner, names, tmp / WEIGHTS_FILE)
        if kind == "resume":
            tensors, plain = _rng_state()
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": tensors},
                       tmp / STATE_PT)
        else:
            plain = {}
        (tmp / STATE_JSON).write_text(json.dumps({
            "step": step, "epoch": epoch, "position": position, "tokens": tokens, "history": history,
            "best": best, "bad_evals": bad_evals, "rng": plain, "config": config.as_dict(), "window": window,
            "trainable": names, "kind": kind}, default=str))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def save_periodic() -> Path:
        folder = out / CHECKPOINTS / f"step-{step}"
        write_checkpoint(folder, "resume")
        if main and config.save_total_limit:
            old = sorted((p for p in (out / CHECKPOINTS).glob("step-*") if not p.name.endswith(".tmp")),
                         key=lambda p: int(p.name.split("-")[1]))
            for stale in old[:-config.save_total_limit]:
                shutil.rmtree(stale, ignore_errors=True)
        accelerator.wait_for_everyone()
        return folder

    def evaluate() -> dict:
        nonlocal best, bad_evals
        inner.eval()
        with torch.no_grad(), accelerator.autocast():
            metrics = {k: float(v) for k, v in (eval_fn(inner) or {}).items()}
        inner.train()
        value = metrics.get(config.metric_for_best)
        if value is not None and not math.isnan(value):
            better = best is None or (value > best["value"] if config.greater_is_better else value < best["value"])
            if better:
                bad_evals = 0
                best = {"step": step, "metric": config.metric_for_best, "value": value,
                        "path": str(out / BEST) if config.keep_best else None}
                if config.keep_best:
                    write_checkpoint(out / BEST, "best")
                    accelerator.wait_for_everyone()
            else:
                bad_evals += 1
        return metrics

    def log(entry: dict):
        history.append(entry)
        if on_log is not None and main:
            on_log(dict(entry))

    start = time.perf_counter()
    stopped_early = False
    micro, accum_n, grad_norm = 0, config.grad_accum, None
    with progress(description, total=total_steps) as bar, _PeakRSS() as memory:
        bar.advance(step)
        while step < total_steps and not stopped_early:
            batches = make_batches(n_items, config, epoch, lengths)
            while position < len(batches) and step < total_steps:
                if micro == 0:  # the last window of an epoch may hold fewer than grad_accum batches
                    accum_n = min(config.grad_accum, len(batches) - position)
                indices = batches[position]
                mine = indices[rank::world_size] if world_size > 1 else indices
                position += 1
                micro += 1
                syncing = micro == accum_n
                batch = to_device(collate_fn([train_data[i] for i in mine]), accelerator.device)
                context = accelerator.no_sync(wrapped) if (world_size > 1 and not syncing) else _null()
                with context, accelerator.autocast():
                    loss, metrics = loss_fn(wrapped, batch)
                    accelerator.backward(loss / accum_n)
                metrics = metrics or {}
                n_tok = int(metrics.get("tokens", len(mine)))
                if world_size > 1:
                    n_tok = int(accelerator.reduce(torch.tensor(n_tok, device=accelerator.device), "sum").item())
                tokens += n_tok
                window.setdefault("loss", []).append(float(loss.detach()))
                for key, value in metrics.items():
                    if key != "tokens":
                        window.setdefault(key, []).append(float(value))
                if not syncing:
                    continue
                if config.max_grad_norm:
                    grad_norm = float(accelerator.clip_grad_norm_(
                        [p for g in groups for p in g["params"]], config.max_grad_norm))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                micro = 0
                step += 1
                epoch_done = position == len(batches)
                if epoch_done:
                    epoch, position = epoch + 1, 0
                if step % config.log_every == 0 or step == total_steps:
                    entry = {"step": step, "epoch": round(epoch + position / len(batches), 4),
                             "lr": scheduler.get_last_lr()[0], "tokens": tokens}
                    if world_size > 1:
                        mean = torch.tensor(sum(window["loss"]) / len(window["loss"]), device=accelerator.device)
                        window["loss"] = [float(accelerator.reduce(mean, "mean"))]
                    entry.update({k: sum(v) / len(v) for k, v in window.items()})
                    if grad_norm is not None:
                        entry["grad_norm"] = grad_norm
                    window = {}
                    log(entry)
                last_loss = next((h["loss"] for h in reversed(history) if "loss" in h), float(loss.detach()))
                bar.advance(1, loss=last_loss)
                if eval_fn is not None and config.eval_every and step % config.eval_every == 0 and step < total_steps:
                    log({"step": step, **evaluate()})
                    if config.early_stopping_patience and bad_evals >= config.early_stopping_patience:
                        stopped_early = True
                if config.save_every and step % config.save_every == 0 and step < total_steps:
                    save_periodic()
                if epoch_done or stopped_early:
                    break
    if eval_fn is not None and step > 0 and not (history and history[-1].get("step") == step
                                                 and config.metric_for_best in history[-1]):
        log({"step": step, **evaluate()})
    final = save_periodic()
    wall = time.perf_counter() - start
    if best is not None and config.keep_best and (out / BEST / WEIGHTS_FILE).exists() and best["step"] != step:
        load_weights(inner, out / BEST / WEIGHTS_FILE)
    inner.eval()
    return TrainResult(steps=step, tokens=tokens, wall_s=wall, history=history, best=best, final_path=final,
                       peak_memory_gb=peak_memory_gb(memory.peak), stopped_early=stopped_early,
                       resumed_from=resumed_from,
                       trainable_params=n_trainable, total_params=n_total)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


__all__ = ["TrainConfig", "TrainResult", "train", "latest_checkpoint", "make_batches", "load_weights",
           "save_weights", "unwrap", "to_device", "world", "peak_memory_gb", "rss_gb"]
