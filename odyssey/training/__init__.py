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
  cross-entropy; distillation returns ``KL(teacher || student)`` on the completion logits (the
  teacher lives in the closure of ``loss_fn``); pruning recovery is plain SFT on the pruned model;
  pretraining (clm/mlm/span) returns the model's own LM loss over ``collate_fn`` batches of the
  objective. ``trainable_params`` restricts what is optimized (default: parameters with
  ``requires_grad``); pass torch-style param-group dicts for per-group LRs.

Checkpoints (every ``save_every`` steps and at the end) go to ``output_dir/checkpoints/step-N/``
and are written atomically; resume restores everything and continues at the same batch, so the
loss curve is the same as an uninterrupted run's: see :mod:`odyssey.training.checkpoint`.

The loop is :mod:`odyssey.training.loop`; this package re-exports its public names.
"""

from odyssey.models.memory import peak_rss_gb, rss_gb  # noqa: F401  (one implementation; rss_gb re-exported)
from odyssey.training.checkpoint import (  # noqa: F401  (re-exported)
    BEST,
    CHECKPOINTS,
    STATE_JSON,
    STATE_PT,
    WEIGHTS_FILE,
    latest_checkpoint,
    load_weights,
)
from odyssey.training.loop import (  # noqa: F401  (re-exported)
    TrainConfig,
    TrainResult,
    make_batches,
    peak_memory_gb,
    to_device,
    train,
    unwrap,
    world,
)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "latest_checkpoint",
    "make_batches",
    "load_weights",
    "unwrap",
    "to_device",
    "world",
    "peak_memory_gb",
    "rss_gb",
]
