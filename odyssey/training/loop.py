"""The loop itself: :func:`train` and its settings (:class:`TrainConfig`) and result (:class:`TrainResult`).

:func:`train` reads top to bottom: settle the data and the number of steps, build the optimizer
and scheduler, restore a checkpoint when resuming (:mod:`odyssey.training.checkpoint`), run the
steps (:class:`_Loop`), evaluate once more, save, and load the best weights back.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from odyssey.errors import OdysseyError
from odyssey.models.memory import peak_rss_gb, rss_gb
from odyssey.training.checkpoint import (
    BEST,
    CHECKPOINTS,
    WEIGHTS_FILE,
    TrainState,
    latest_checkpoint,
    load_weights,
    prune_checkpoints,
    read_checkpoint,
    trainable_tensors,
    write_checkpoint,
)


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
    optimizer_impl: str = "auto"  # auto (fused where torch has it) | fused | foreach | for-loop
    fast_dropout: bool = True  # nn.Dropout -> training.speed.FastDropout for the run (same mask law, cheaper on CPU)

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
            (
                "optimizer_impl",
                self.optimizer_impl in {"auto", "fused", "foreach", "for-loop"},
                "auto, fused, foreach or for-loop",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise OdysseyError(
                    f"training setting {name}={getattr(self, name)!r} is invalid: expected {expected}",
                    hint=f"fix {name} in the stage's section of odyssey.yaml",
                )

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
    settings: dict = field(default_factory=dict)  # how it ran: precision, attention, optimizer, threads...

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
        raise OdysseyError(
            "batch_tokens needs the length of each training item",
            hint="pass length_fn=... to train(), or items with an 'input_ids' list",
        ) from exc


def make_batches(
    n_items: int, config: TrainConfig, epoch: int, lengths: Sequence[int] | None = None
) -> list[list[int]]:
    """The batches (lists of item indices) of one epoch: a seeded shuffle, cut by count or token budget."""
    import torch

    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(n_items, generator=generator).tolist()
    if config.batch_tokens is None:
        return [order[i : i + config.batch_size] for i in range(0, n_items, config.batch_size)]
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
        raise OdysseyError(
            "nothing to train: no parameter requires a gradient",
            hint="check the fine-tuning method, or pass trainable_params=",
        )
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


def train(
    model,
    train_data: Sequence,
    loss_fn: Callable,
    config: TrainConfig,
    *,
    eval_fn: Callable | None = None,
    collate_fn: Callable | None = None,
    resume: bool = False,
    trainable_params=None,
    description: str = "training",
    on_log: Callable[[dict], Any] | None = None,
    length_fn: Callable[[Any], int] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_data`` by minimizing ``loss_fn``; see :mod:`odyssey.training`."""
    from torch.utils.data import default_collate

    from odyssey.training import speed

    config = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    _require_data(train_data)
    accelerator, mixed = _accelerator(config.precision)
    if accelerator.is_main_process:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    lengths = _lengths(train_data, config, length_fn)
    total_steps = _total_steps(len(train_data), config, lengths)

    checkpoint = latest_checkpoint(config.output_dir) if resume else None
    if checkpoint is None:
        _seed_everything(config.seed)
    _prepare_model(model, config)
    groups = _param_groups(model, trainable_params, config.weight_decay)
    names = _trainable_names(model, groups)  # counted before prepare(), which may wrap or shard them
    n_trainable = sum(p.numel() for g in groups for p in g["params"])
    n_total = sum(p.numel() for p in model.parameters())
    optimizer, scheduler, impl = _optimizer(groups, config, total_steps)
    swapped = speed.swap_dropout(model) if config.fast_dropout else []
    settings = _settings(model, accelerator, mixed, impl, swapped, config)
    if accelerator.is_main_process:
        speed.state(settings)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    task = _Task(train_data, lengths, loss_fn, collate_fn or default_collate, eval_fn, on_log)
    loop = _Loop(accelerator, wrapped, optimizer, scheduler, groups, names, config, total_steps, task)
    # after prepare(): the RNG is restored last, as it was saved
    resumed_from = loop.restore(checkpoint) if checkpoint is not None else None

    final, wall, cpu_peak = _run(loop, description, swapped)
    state = loop.state
    return TrainResult(
        steps=state.step,
        tokens=state.tokens,
        wall_s=wall,
        history=state.history,
        best=state.best,
        final_path=final,
        peak_memory_gb=peak_memory_gb(cpu_peak),
        stopped_early=loop.stopped_early,
        resumed_from=resumed_from,
        trainable_params=n_trainable,
        total_params=n_total,
        settings=settings,
    )


def _require_data(train_data: Sequence) -> None:
    if len(train_data) == 0:
        raise OdysseyError(
            "no training data: the training set is empty", hint="check the train split of scope.data in odyssey.yaml"
        )


def _run(loop: _Loop, description: str, swapped: list) -> tuple[Path, float, float]:
    """The steps, a last evaluation and checkpoint, then the best weights back: (the last checkpoint
    folder, wall seconds, the resident-set peak). The swapped dropout modules are restored in any case."""
    from odyssey.training import speed
    from odyssey.ui import progress

    start = time.perf_counter()
    try:
        with progress(description, total=loop.total_steps) as bar, _PeakRSS() as memory:
            loop.run(bar)
        loop.final_evaluation()
        final = loop.save_periodic()
        wall = time.perf_counter() - start
        loop.load_best()
    finally:
        speed.restore(swapped)
    return final, wall, memory.peak


def _settings(model, accelerator, mixed: str, impl: str, swapped: list, config: TrainConfig) -> dict:
    """What the hardware chose, for the run's log and result (see :mod:`odyssey.training.speed`)."""
    import torch

    from odyssey.training import speed

    return {
        "device": str(accelerator.device),
        "precision": {"no": "fp32"}.get(mixed, mixed),
        "attention": speed.attention_of(model),
        "optimizer": f"{config.optimizer} ({impl})",
        "threads": torch.get_num_threads(),
        "fast_dropout": len(swapped),
        "gradient_checkpointing": config.gradient_checkpointing,
        "batch": f"<= {config.batch_tokens} tokens" if config.batch_tokens else f"{config.batch_size} items",
    }


def _lengths(train_data: Sequence, config: TrainConfig, length_fn) -> list[int] | None:
    """Each item's length in tokens, when batches are cut by a token budget."""
    if config.batch_tokens is None:
        return None
    length_fn = length_fn or _default_length
    return [int(length_fn(item)) for item in train_data]


def _total_steps(n_items: int, config: TrainConfig, lengths: list[int] | None) -> int:
    batches_per_epoch = len(make_batches(n_items, config, 0, lengths))
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / config.grad_accum))
    return config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))


def _prepare_model(model, config: TrainConfig) -> None:
    if config.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # adapters on a frozen base need grads flowing into layer 0
    model.train()


def _optimizer(groups: list[dict], config: TrainConfig, total_steps: int):
    import torch
    from transformers import get_scheduler

    from odyssey.training import speed

    kwargs, impl = speed.optimizer_kwargs([p for g in groups for p in g["params"]], config.optimizer_impl)
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, betas=tuple(config.adam_betas), **kwargs)
    else:
        optimizer = torch.optim.SGD(groups, lr=config.learning_rate, **kwargs)
    scheduler = get_scheduler(
        config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps
    )
    return optimizer, scheduler, impl


@dataclass
class _Task:
    """What a run trains on and how: the items (and their lengths, for token budgets), the loss, the
    collate function, the evaluation and the log callback."""

    train_data: Sequence
    lengths: list[int] | None
    loss_fn: Callable
    collate_fn: Callable
    eval_fn: Callable | None
    on_log: Callable[[dict], Any] | None


class _Loop:
    """The steps of one run: micro-batches, accumulation, the optimizer step, logging, evaluation
    and checkpoints. ``state`` (a :class:`TrainState`) is what a checkpoint saves besides tensors."""

    def __init__(
        self,
        accelerator,
        wrapped,
        optimizer,
        scheduler,
        groups: list[dict],
        names: list[str],
        config: TrainConfig,
        total_steps: int,
        task: _Task,
    ):
        self.accelerator, self.wrapped, self.optimizer, self.scheduler = accelerator, wrapped, optimizer, scheduler
        self.inner = accelerator.unwrap_model(wrapped)
        self.groups, self.config, self.total_steps = groups, config, total_steps
        self.names = names
        self.train_data, self.lengths = task.train_data, task.lengths
        self.loss_fn, self.collate_fn = task.loss_fn, task.collate_fn
        self.eval_fn, self.on_log = task.eval_fn, task.on_log
        self.out = Path(config.output_dir)
        self.rank, self.world_size = accelerator.process_index, accelerator.num_processes
        self.main = accelerator.is_main_process
        self.state = TrainState()
        self.stopped_early = False
        self.micro, self.accum_n, self.grad_norm = 0, config.grad_accum, None

    def restore(self, checkpoint: Path) -> int:
        """Continue from a resume checkpoint (after prepare()); the step it was saved at."""
        self.state = read_checkpoint(
            checkpoint,
            self.config.as_dict(),
            lambda path: load_weights(self.inner, path),
            self.optimizer,
            self.scheduler,
        )
        return self.state.step

    # -- the steps --
    def run(self, bar) -> None:
        state, config = self.state, self.config
        bar.advance(state.step)
        while state.step < self.total_steps and not self.stopped_early:
            batches = make_batches(len(self.train_data), config, state.epoch, self.lengths)
            while state.position < len(batches) and state.step < self.total_steps:
                if self.micro == 0:  # the last window of an epoch may hold fewer than grad_accum batches
                    self.accum_n = min(config.grad_accum, len(batches) - state.position)
                indices = batches[state.position]
                state.position += 1
                self.micro += 1
                loss = self.forward_backward(indices, syncing=self.micro == self.accum_n)
                if self.micro < self.accum_n:
                    continue
                self.optimizer_step()
                epoch_done = state.position == len(batches)
                if epoch_done:
                    state.epoch, state.position = state.epoch + 1, 0
                if state.step % config.log_every == 0 or state.step == self.total_steps:
                    self.log_window(len(batches))
                last_loss = next((h["loss"] for h in reversed(state.history) if "loss" in h), float(loss.detach()))
                bar.advance(1, loss=last_loss)
                self.between_steps()
                if epoch_done or self.stopped_early:
                    break

    def forward_backward(self, indices: list[int], syncing: bool):
        """One micro-batch (this process's share of it): loss, gradients, and its values in the window."""
        import torch

        accelerator, state = self.accelerator, self.state
        mine = indices[self.rank :: self.world_size] if self.world_size > 1 else indices
        batch = to_device(self.collate_fn([self.train_data[i] for i in mine]), accelerator.device)
        context = accelerator.no_sync(self.wrapped) if (self.world_size > 1 and not syncing) else _null()
        with context, accelerator.autocast():
            loss, metrics = self.loss_fn(self.wrapped, batch)
            accelerator.backward(loss / self.accum_n)
        metrics = metrics or {}
        n_tok = int(metrics.get("tokens", len(mine)))
        if self.world_size > 1:
            n_tok = int(accelerator.reduce(torch.tensor(n_tok, device=accelerator.device), "sum").item())
        state.tokens += n_tok
        state.window.setdefault("loss", []).append(float(loss.detach()))
        for key, value in metrics.items():
            if key != "tokens":
                state.window.setdefault(key, []).append(float(value))
        return loss

    def optimizer_step(self) -> None:
        if self.config.max_grad_norm:
            self.grad_norm = float(
                self.accelerator.clip_grad_norm_(
                    [p for g in self.groups for p in g["params"]], self.config.max_grad_norm
                )
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.micro = 0
        self.state.step += 1

    def log_window(self, n_batches: int) -> None:
        """One history line: the mean of every value since the last one (the loss averaged over processes)."""
        import torch

        state, accelerator = self.state, self.accelerator
        entry = {
            "step": state.step,
            "epoch": round(state.epoch + state.position / n_batches, 4),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens": state.tokens,
        }
        window = state.window
        if self.world_size > 1:
            mean = torch.tensor(sum(window["loss"]) / len(window["loss"]), device=accelerator.device)
            window["loss"] = [float(accelerator.reduce(mean, "mean"))]
        entry.update({k: sum(v) / len(v) for k, v in window.items()})
        if self.grad_norm is not None:
            entry["grad_norm"] = self.grad_norm
        state.window = {}
        self.log(entry)

    def between_steps(self) -> None:
        """Periodic evaluation (and early stopping) and periodic checkpoints; the last step has its own."""
        config, step = self.config, self.state.step
        if step >= self.total_steps:
            return
        if self.eval_fn is not None and config.eval_every and step % config.eval_every == 0:
            self.log({"step": step, **self.evaluate()})
            if config.early_stopping_patience and self.state.bad_evals >= config.early_stopping_patience:
                self.stopped_early = True
        if config.save_every and step % config.save_every == 0:
            self.save_periodic()

    def log(self, entry: dict) -> None:
        self.state.history.append(entry)
        if self.on_log is not None and self.main:
            self.on_log(dict(entry))

    # -- evaluation and checkpoints --
    def evaluate(self) -> dict:
        """``eval_fn``'s metrics; the best value so far is tracked (and its weights saved to ``best/``)."""
        import torch

        state, config = self.state, self.config
        self.inner.eval()
        with torch.no_grad(), self.accelerator.autocast():
            metrics = {k: float(v) for k, v in (self.eval_fn(self.inner) or {}).items()}
        self.inner.train()
        value = metrics.get(config.metric_for_best)
        if value is None or math.isnan(value):
            return metrics
        best = state.best
        if best is None or (value > best["value"] if config.greater_is_better else value < best["value"]):
            state.bad_evals = 0
            state.best = {
                "step": state.step,
                "metric": config.metric_for_best,
                "value": value,
                "path": str(self.out / BEST) if config.keep_best else None,
            }
            if config.keep_best:
                self.write(self.out / BEST, "best")
                self.accelerator.wait_for_everyone()
        else:
            state.bad_evals += 1
        return metrics

    def final_evaluation(self) -> None:
        """An evaluation at the last step, unless the last history line already is one."""
        history, step = self.state.history, self.state.step
        if (
            self.eval_fn is not None
            and step > 0
            and not (history and history[-1].get("step") == step and self.config.metric_for_best in history[-1])
        ):
            self.log({"step": step, **self.evaluate()})

    def write(self, folder: Path, kind: str) -> None:
        if self.main:  # one process writes; the others wait for it where it matters
            weights = trainable_tensors(self.inner, self.names)
            write_checkpoint(folder, kind, self.state, weights, self.config.as_dict(), self.optimizer, self.scheduler)

    def save_periodic(self) -> Path:
        folder = self.out / CHECKPOINTS / f"step-{self.state.step}"
        self.write(folder, "resume")
        if self.main and self.config.save_total_limit:
            prune_checkpoints(self.out, self.config.save_total_limit)
        self.accelerator.wait_for_everyone()
        return folder

    def load_best(self) -> None:
        """Leave the model with the best weights (when they are not the last ones), in eval mode."""
        best, config = self.state.best, self.config
        if (
            best is not None
            and config.keep_best
            and (self.out / BEST / WEIGHTS_FILE).exists()
            and best["step"] != self.state.step
        ):
            load_weights(self.inner, self.out / BEST / WEIGHTS_FILE)
        self.inner.eval()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
