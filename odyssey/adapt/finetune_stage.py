"""Instruction fine-tuning (``odyssey finetune``): full, LoRA or prompt tuning, then evaluation.

One pass, top to bottom:

1. The base model and prompt: ``adapt.model`` (else the prompt stage's model, else the first model);
   the prompt stage's best candidate's PromptConfig when the store has one (instruction and system
   prompt; fine-tuning trains zero-shot, so its shots are dropped), else the spec's default.
2. Data: the train split (plus ``adapt.mix`` sources by weight) rendered through
   :mod:`odyssey.prompts` and the chat template, loss on the completion tokens only
   (:mod:`odyssey.training.sft`); batches without pad waste.
3. The method (:mod:`odyssey.adapt.finetune_methods`), the trainable-parameter count and the memory
   estimate (:mod:`odyssey.models.memory`) before training; the measured peak after.
4. :func:`odyssey.training.train`: checkpoints, ``resume``, validation loss, early stopping.
5. The model is saved (a full checkpoint, or a PEFT adapter with ``odyssey-adapter.json`` naming
   the base), recorded as a candidate whose parent is the base candidate, with the data hash and
   the training config, then scored by the harness on validation and test.

Under ``accelerate launch`` / ``torchrun`` every process trains; only the first records and evaluates.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey import ui
from odyssey.errors import OdysseyError
from odyssey.paths import check_name

ADAPT_DIR = "adapt"


@dataclass
class FinetuneResult:
    run_id: int | None
    candidate: str
    model_ref: str
    method: str
    base: str
    parent: str | None
    trainable_params: int
    total_params: int
    steps: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    peak_memory_gb: float  # GPU: max allocated; CPU: peak resident set during training minus the process before loading
    memory_estimate_gb: float
    train_loss: float | None
    val_loss: dict
    metrics: dict = field(default_factory=dict)  # split -> metrics
    gates: list = field(default_factory=list)
    data_hash: str = ""
    resumed_from: int | None = None
    stopped_early: bool = False
    forgetting: dict | None = None
    notes: list = field(default_factory=list)
    report: dict = field(default_factory=dict)

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable_params / max(self.total_params, 1)

    def as_dict(self) -> dict:
        return {**asdict(self), "trainable_pct": self.trainable_pct}


@dataclass
class MergeResult:
    candidate: str
    model_ref: str
    parent: str
    metrics: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# ---- setup -------------------------------------------------------------------------------------


def base_setup(project, model=None, *, write: bool = True):
    """(base ref, slug, PromptConfig, parent candidate id, parent name) for fine-tuning.

    The parent comes from ``Project.candidate``, the one resolver: ``model`` (a candidate name, a
    Candidate, or a model reference; default ``adapt.model``, else ``prompt.model``, else the first
    model). A model reference starts from the prompt stage's candidate of that model
    (``<slug>:prompt``) when the store has one, else from the model zero-shot with the default prompt.
    ``write=False`` (the other processes under DDP) reads the store but never creates the base candidate.
    """
    from dataclasses import replace

    from odyssey.models import parse_ref

    spec, store = project.spec, project.store
    parent = project.candidate(model or spec.adapt.model or spec.prompt.model or project.default_model())
    ref = parent.model_ref
    slug = parse_ref(ref, project.root).slug
    kept_prompt = store.candidate_obj(f"{slug}:prompt") if not parent.stored else None
    if kept_prompt is not None and kept_prompt.config.get("prompt"):
        parent = kept_prompt
    # Fine-tuning teaches the task itself: train and serve zero-shot (demos would cost tokens).
    cfg = replace(parent.prompt, shots=0, selection="fixed", generation=spec.evaluate.generation.model_dump())
    if not parent.stored:
        stored = store.candidate_obj(parent.name)
        if stored is None and not write:
            return ref, slug, cfg, None, None
        parent = stored or store.ensure(parent)
    return ref, slug, cfg, parent.id, parent.name


def workdir(project, slug: str, method: str) -> Path:
    return project.state_dir / ADAPT_DIR / f"{slug}-{method}"


def _mix_examples(project, aspec, n_train: int, seed: int):
    """(source, examples) drawn from each ``adapt.mix`` source: ``weight`` x the train split's size."""
    from odyssey.data import read_records, to_examples
    from odyssey.spec import DataSpec

    out = []
    for i, source in enumerate(aspec.mix):
        path = Path(source.source)
        path = path if path.is_absolute() else project.root / path
        if not path.exists():
            raise OdysseyError(
                f"adapt.mix[{i}].source: {source.source} does not exist",
                hint="give a .jsonl/.json/.csv/.parquet file relative to the project folder",
            )
        rows = to_examples(read_records(path), DataSpec(source=str(path), fields=source.fields), str(path))
        want = max(1, round(source.weight * n_train))
        rng = random.Random(f"{seed}:{i}")
        picked = [rows[j % len(rows)] for j in rng.sample(range(max(want, len(rows))), want)] if rows else []
        out.append((source, picked))
    return out


def _general_examples(project, aspec):
    from odyssey.data import read_records, to_examples
    from odyssey.spec import DataSpec

    path = Path(aspec.general_set)
    path = path if path.is_absolute() else project.root / path
    if not path.exists():
        raise OdysseyError(
            f"adapt.general_set: {aspec.general_set} does not exist",
            hint="a jsonl file with 'input' and 'target' columns, relative to the project folder",
        )
    return to_examples(read_records(path), DataSpec(source=str(path)), str(path))


def memory_estimate_gb(
    model, method: str, trainable: int, total: int, groups, seq2seq: bool, dropout_inputs: int = 0
) -> float:
    """This run's training memory for its largest batch: the one estimate (odyssey.models.memory), which
    ``odyssey plan`` reports for the same job, less the runtime (the measured peak here is counted from
    what the process held before the model). ``dropout_inputs``: see ``job_components``."""
    from odyssey.models.memory import Shape, job_components

    def width(e):  # an example, or a packed row of examples
        return sum(len(x.input_ids) for x in e) if isinstance(e, list) else len(e.input_ids)

    sizes = [(len(g), max(width(e) for e in g)) for g in groups[:2000]] or [(1, 1)]
    batch, seq = max(sizes, key=lambda s: s[0] * s[1])
    config = getattr(model, "config", None)
    base = total if method == "full" else total - trainable  # a PEFT model's total includes its adapter
    parts = job_components(
        Shape.from_config(config, base),
        "full" if method == "full" else "lora",
        batch=batch,
        seq=seq,
        trainable=trainable,
        cpu_heap=not _on_gpu(),
        dropout_inputs=dropout_inputs,
    )
    return sum(parts.values())


def _groups(items, aspec, *, seq2seq: bool, seed: int):
    from odyssey.training.sft import bucket_groups, pack_groups, random_groups

    if aspec.packing == "pack" and not seq2seq:
        return pack_groups(items, max_len=aspec.max_seq_len, batch_tokens=aspec.batch_tokens)
    if aspec.packing == "pad":
        return random_groups(items, batch_size=aspec.batch_size, seed=seed)
    return bucket_groups(
        items, batch_tokens=aspec.batch_tokens, batch_size=aspec.batch_size, seed=seed, seq2seq=seq2seq
    )


def _save_model(model, tokenizer, method: str, base_ref: str, out: Path) -> Path:
    """The trained model as a folder ``odyssey.models.load`` accepts; written under a temp name, then renamed."""
    from odyssey.models.loading import ADAPTER_META

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if method != "full":
        (tmp / ADAPTER_META).write_text(json.dumps({"base": base_ref, "method": method}))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


# ---- the entry point ---------------------------------------------------------------------------


def finetune(
    project,
    *,
    method: str | None = None,
    resume: bool = False,
    model: str | None = None,
    max_steps: int | None = None,
    epochs: float | None = None,
    evaluate: bool = True,
    limit: int | None = None,
    batch_size: int | None = None,
    engine: str | None = None,
    name: str | None = None,
    on_eval=None,
) -> FinetuneResult:
    """Fine-tune the base model with ``method`` (default ``adapt.method``), record and evaluate the candidate.

    ``name``: the candidate's name (default ``<model>:<method>``); its working folder follows it, so runs of
    several names (``odyssey tune``'s trials) keep their own checkpoints. ``on_eval(step, metrics)`` is
    called with each validation-loss evaluation during training (in the first process); what it raises
    ends the run, failed with that error (``odyssey tune`` prunes a trial so).
    """
    if name is not None:
        check_name(name, "candidate name")  # before any work: it names the working folder
    job = _setup(project, method=method, max_steps=max_steps, epochs=epochs, model=model)
    train_examples, mixed, validation = _training_examples(job)
    base = _load_base(job)
    batches = _encode_data(job, base, train_examples, mixed, validation)
    trainee = _prepare_model(job, base, batches)
    out = _output_dir(project, job.slug, job.method, name)
    tconfig = _train_config(job, _train_dir(job, out, resume=resume), batches)

    with _open_run(job, batches, tconfig) as run:
        result = _train(job, run, trainee, batches, base, tconfig, resume=resume, on_eval=on_eval)
        summary = _summary(job, run, result, trainee, batches, base, candidate=name or f"{job.slug}:{job.method}")
        if not job.main:
            return summary
        model_dir = _save_model(trainee.model, base.tokenizer, job.method, job.ref, out / "model")
        summary.model_ref = str(model_dir)
        # what training found, before the evaluation adds its metrics and notes
        train_summary = {k: v for k, v in summary.as_dict().items() if k not in {"metrics", "gates", "report"}}
        cand_id = _record_candidate(job, run, summary, batches, tconfig)
        history = out / "history.json"
        history.write_text(json.dumps(result.history, indent=1))
        run.add_artifact(history, "train-history")
        if evaluate:
            _evaluate_candidate(
                job, run, trainee, base, model_dir, cand_id, summary, engine=engine, limit=limit, batch_size=batch_size
            )
        run.set_summary(train_summary | {"metrics": summary.metrics})
    return summary


# ---- the phases of a fine-tuning run -----------------------------------------------------------


@dataclass
class _Job:
    """What one fine-tuning run is, shared by its phases."""

    project: object
    aspec: object  # spec.adapt with the call's overrides; packing falls back to buckets where it cannot apply
    ref: str  # the base model
    slug: str
    cfg: object  # the PromptConfig training and serving use
    parent_id: int | None
    parent_name: str | None
    data: object  # the project's dataset
    main: bool  # the first process: only it records and evaluates
    world_size: int
    notes: list = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.aspec.method


@dataclass
class _Base:
    """The loaded base model."""

    loaded: object  # odyssey.models.loading.LoadedModel
    model: object  # what gets trained: loaded.model, or its quantized reload for QLoRA
    seq2seq: bool
    rss_before: float  # what the process held before the model: subtracted from the measured peak

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def device(self):
        return self.loaded.model.device


@dataclass
class _Batches:
    """The tokenized data in batches: training, validation loss, and the general set (forgetting)."""

    items: list  # the encoded training examples, the train split's then the mix's
    digest: str
    groups: list
    val_groups: list
    general: list | None
    collator: object
    eval_collator: object

    def val_loss(self, model, device) -> float:
        from odyssey.training.sft import mean_loss

        return mean_loss(model, self.val_groups, self.eval_collator, device)

    def general_loss(self, model, device) -> float:
        from odyssey.training.sft import mean_loss

        return mean_loss(model, self.general, self.eval_collator, device)


@dataclass
class _Trainee:
    """The model being trained (the method applied), its size, and its losses before training."""

    model: object
    n_trainable: int
    n_total: int
    memory_estimate_gb: float
    val_loss_before: float | None
    general_loss_before: float | None


def _setup(project, *, method, max_steps, epochs, model) -> _Job:
    """The adapt settings with the call's overrides, this process's place, and the base and its prompt."""
    from odyssey.training import world

    aspec = project.spec.adapt.model_copy(
        update={k: v for k, v in {"method": method, "max_steps": max_steps, "epochs": epochs}.items() if v is not None}
    )
    if aspec.method not in {"full", "lora", "prompt_tuning"}:
        raise OdysseyError(
            f"unknown fine-tuning method {aspec.method!r}", hint="use --method full, lora or prompt_tuning"
        )
    rank, world_size = world()
    main = rank == 0
    ref, slug, cfg, parent_id, parent_name = base_setup(project, model, write=main)
    return _Job(project, aspec, ref, slug, cfg, parent_id, parent_name, project.dataset(), main, world_size)


def _training_examples(job: _Job):
    """(train split examples, ``adapt.mix`` draws, validation examples)."""
    train_examples = list(job.data.splits.get("train", []))
    if not train_examples:
        raise OdysseyError(
            "fine-tuning needs training data: the train split is empty",
            hint="set scope.data.splits.train above 0, or give a train file in scope.data.source",
        )
    mixed = _mix_examples(job.project, job.aspec, len(train_examples), job.aspec.seed)
    validation = job.data.splits.get("validation", [])[: job.aspec.val_limit or None]
    return train_examples, mixed, validation


def _load_base(job: _Job) -> _Base:
    from odyssey.adapt.finetune_methods import load_quantized
    from odyssey.models import FAMILY_DECODER, FAMILY_SEQ2SEQ, load
    from odyssey.models.memory import trim_heap
    from odyssey.training import rss_gb

    trim_heap()  # an earlier run's freed heap would otherwise count as "before" (see trim_heap)
    rss_before = rss_gb()  # what the process held before the model: subtracted from the measured peak
    with ui.status(f"loading {job.ref}") as update:
        loaded = load(job.ref, root=job.project.root, dtype="float32", progress=update)
    if loaded.family not in (FAMILY_DECODER, FAMILY_SEQ2SEQ):
        raise OdysseyError(
            f"{job.ref} is an {loaded.family} model: instruction fine-tuning needs a model that generates",
            hint="pick a decoder-only or encoder-decoder model in adapt.model",
        )
    seq2seq = loaded.family == FAMILY_SEQ2SEQ
    base_model = loaded.model
    if job.aspec.lora.quantize and job.method == "lora":
        base_model = load_quantized(loaded.path, job.aspec.lora.quantize, seq2seq)
    return _Base(loaded, base_model, seq2seq, rss_before)


def _encode_data(job: _Job, base: _Base, train_examples, mixed, validation) -> _Batches:
    """Tokenize every example and group them into batches; truncation and a packing fallback are noted."""
    from odyssey.prompts import PromptConfig
    from odyssey.training.sft import Collator, data_hash, encode_example

    cfg, seq2seq = job.cfg, base.seq2seq

    def encode(ex, c=cfg):
        return encode_example(base.tokenizer, c, ex, max_len=job.aspec.max_seq_len, seq2seq=seq2seq)

    with ui.status("tokenizing the training data"):
        items = [encode(ex) for ex in train_examples]
        for source, examples in mixed:
            # a mixed-in dataset keeps its own instruction when it has one (general data is not a summary task)
            mix_cfg = (
                cfg
                if source.instruction is None
                else PromptConfig.from_dict({**cfg.as_dict(), "instruction": source.instruction})
            )
            items += [encode(ex, mix_cfg) for ex in examples]
        val_items = [encode(ex) for ex in validation]
    cut = sum(1 for e in items if e.truncated)
    if cut:
        job.notes.append(f"{cut} of {len(items)} training inputs were cut to adapt.max_seq_len={job.aspec.max_seq_len}")
    digest = data_hash(items)
    job.aspec = _packing_used(job, seq2seq)
    aspec = job.aspec
    groups = _groups(items, aspec, seq2seq=seq2seq, seed=aspec.seed)
    val_groups = _eval_groups(val_items, aspec, seq2seq) if val_items else []
    general = None
    if aspec.general_set:
        general = _eval_groups([encode(ex) for ex in _general_examples(job.project, aspec)], aspec, seq2seq)
    return _Batches(
        items=items,
        digest=digest,
        groups=groups,
        val_groups=val_groups,
        general=general,
        collator=Collator(base.tokenizer.pad_token_id, seq2seq=seq2seq, packed=aspec.packing == "pack"),
        eval_collator=Collator(base.tokenizer.pad_token_id, seq2seq=seq2seq),
    )


def _packing_used(job: _Job, seq2seq: bool):
    """``job.aspec``, with ``packing: pack`` turned into buckets (and noted) where packing cannot apply."""
    if job.aspec.packing == "pack" and (seq2seq or job.method == "prompt_tuning"):
        # PEFT's soft prompts ignore position_ids (which keep packed examples apart); seq2seq has no rows to pack
        job.notes.append(
            f"packing does not apply to {'seq2seq models' if seq2seq else 'prompt tuning'}: "
            "length-bucketed batches instead"
        )
        return job.aspec.model_copy(update={"packing": "bucket"})
    return job.aspec


def _eval_groups(items, aspec, seq2seq: bool):
    from odyssey.training.sft import bucket_groups

    return bucket_groups(items, batch_tokens=aspec.batch_tokens, batch_size=aspec.batch_size, seq2seq=seq2seq)


def _prepare_model(job: _Job, base: _Base, batches: _Batches) -> _Trainee:
    """The method applied to the base model, with its parameter counts, memory estimate and starting losses."""
    import torch

    from odyssey.adapt.finetune_methods import apply_method, count_params
    from odyssey.training.lora import lora_input_features

    method, aspec = job.method, job.aspec
    general_before = batches.general_loss(base.model, base.device) if batches.general else None
    torch.manual_seed(aspec.seed)  # LoRA's A matrices and random soft prompts are drawn here: same seed, same run
    trained = apply_method(
        base.model,
        method,
        aspec,
        seq2seq=base.seq2seq,
        tokenizer_path=base.loaded.path,
        instruction=job.cfg.instruction,
    )
    n_trainable, n_total = count_params(trained)
    dropout_inputs = lora_input_features(trained) if method == "lora" and aspec.lora.dropout > 0 else 0
    estimate = memory_estimate_gb(
        base.model, method, n_trainable, n_total, batches.groups, base.seq2seq, dropout_inputs
    )
    ui.say(
        f"{method} fine-tuning of {job.ref} - {n_trainable:,} of {n_total:,} parameters train "
        f"({100 * n_trainable / max(n_total, 1):.3f}%); memory estimate {estimate:.2f} GB; "
        f"{len(batches.items)} examples in {len(batches.groups)} batches ({aspec.packing})"
    )
    val_before = batches.val_loss(trained, base.device) if batches.val_groups else None
    return _Trainee(trained, n_trainable, n_total, estimate, val_before, general_before)


def _output_dir(project, slug: str, method: str, name: str | None) -> Path:
    """The run's working folder: the candidate's name made path-safe when given, else ``<slug>-<method>``."""
    if name:
        return project.state_dir / ADAPT_DIR / re.sub(r"[^\w.-]", "-", name)  # tiny-llama-lora-tune-3
    return workdir(project, slug, method)


def _train_dir(job: _Job, out: Path, *, resume: bool) -> Path:
    """The checkpoint folder: emptied by the first process unless resuming; a resume with nothing to resume is noted."""
    from odyssey.training import latest_checkpoint

    train_dir = out / "train"
    if job.main and not resume:
        shutil.rmtree(train_dir, ignore_errors=True)
    if resume and latest_checkpoint(train_dir) is None:
        job.notes.append(f"--resume: no checkpoint in {train_dir}; started from the beginning")
        ui.say(job.notes[-1])
    return train_dir


def _train_config(job: _Job, train_dir: Path, batches: _Batches):
    from odyssey.adapt.finetune_methods import DEFAULT_LR
    from odyssey.training import TrainConfig

    aspec = job.aspec
    return TrainConfig(
        output_dir=train_dir,
        max_steps=aspec.max_steps,
        epochs=aspec.epochs,
        learning_rate=aspec.learning_rate or DEFAULT_LR[job.method],
        lr_scheduler=aspec.lr_scheduler,
        warmup_steps=aspec.warmup_steps,
        weight_decay=aspec.weight_decay,
        batch_size=job.world_size,
        grad_accum=aspec.grad_accum,
        seed=aspec.seed,
        precision=aspec.precision,
        gradient_checkpointing=aspec.gradient_checkpointing,
        log_every=max(1, min(10, len(batches.groups) // 4 or 1)),
        eval_every=aspec.eval_every if batches.val_groups else None,
        save_every=aspec.save_every,
        early_stopping_patience=aspec.early_stopping_patience,
        keep_best=aspec.keep_best and bool(batches.val_groups),
    )


def _open_run(job: _Job, batches: _Batches, tconfig):
    """The store's ``adapt`` run in the first process; a stand-in that records nothing in the others."""
    if not job.main:
        return _NullRun()
    run_config = {
        "method": job.method,
        "base": job.ref,
        "data_hash": batches.digest,
        "data": job.data.fingerprint,
        "n_examples": len(batches.items),
        "train": tconfig.as_dict(),
        "adapt": job.aspec.model_dump(mode="json"),
        "prompt": job.cfg.as_dict(),
        "world_size": job.world_size,
    }
    return job.project.store.run("adapt", job.project.spec.as_dict(), run_config)


def _train(job: _Job, run, trainee: _Trainee, batches: _Batches, base: _Base, tconfig, *, resume, on_eval):
    """Train; the first process logs each entry to the run, and validation evaluations go to ``on_eval``."""
    from odyssey.training import train
    from odyssey.training.sft import SFTModule, sft_loss

    def log(entry):
        if job.main:
            run.log_metrics(
                {f"train/{k}": v for k, v in entry.items() if isinstance(v, (int, float)) and k != "step"},
                step=entry.get("step"),
            )
        if on_eval is not None and "val_loss" in entry:
            on_eval(entry["step"], entry)

    eval_fn = (lambda m: {"val_loss": batches.val_loss(m.model, base.device)}) if batches.val_groups else None
    result = train(
        SFTModule(trainee.model),
        batches.groups,
        sft_loss,
        tconfig,
        eval_fn=eval_fn,
        collate_fn=batches.collator,
        resume=resume,
        trainable_params=[p for p in trainee.model.parameters() if p.requires_grad],
        description=f"{job.method} fine-tuning",
        on_log=log,
    )
    trainee.model.eval()
    return result


def _summary(job: _Job, run, result, trainee: _Trainee, batches: _Batches, base: _Base, *, candidate: str):
    """The FinetuneResult of a finished training (its model_ref and metrics are filled in later)."""
    return FinetuneResult(
        run_id=getattr(run, "id", None),
        candidate=candidate,
        model_ref="",
        method=job.method,
        base=job.ref,
        parent=job.parent_name,
        trainable_params=trainee.n_trainable,
        total_params=trainee.n_total,
        steps=result.steps,
        tokens=result.tokens,
        wall_s=result.wall_s,
        tokens_per_s=result.tokens_per_s,
        peak_memory_gb=max(result.peak_memory_gb - (0 if _on_gpu() else base.rss_before), 0.0),
        memory_estimate_gb=trainee.memory_estimate_gb,
        train_loss=result.final_loss,
        val_loss={
            "before": trainee.val_loss_before,
            "after": _val_loss_after(result, trainee, batches, base),
            "best": result.best,
        },
        data_hash=batches.digest,
        resumed_from=result.resumed_from,
        stopped_early=result.stopped_early,
        forgetting=_forgetting(job, trainee, batches, base),
        notes=job.notes,
    )


def _val_loss_after(result, trainee: _Trainee, batches: _Batches, base: _Base) -> float | None:
    evals = [h["val_loss"] for h in result.history if "val_loss" in h]
    if batches.val_groups and (not evals or (result.best and result.best["step"] != result.steps)):
        return batches.val_loss(trainee.model, base.device)  # the best weights were loaded back
    return evals[-1] if evals else None


def _forgetting(job: _Job, trainee: _Trainee, batches: _Batches, base: _Base) -> dict | None:
    """The general set's loss before and after training (``adapt.general_set``); a rise over 5% is noted."""
    if batches.general is None:
        return None
    before, after = trainee.general_loss_before, batches.general_loss(trainee.model, base.device)
    if after > before * 1.05:
        job.notes.append(f"forgetting: loss on the general set rose from {before:.3f} to {after:.3f}")
    return {"general_loss_before": before, "general_loss_after": after, "increase": after - before}


def _record_candidate(job: _Job, run, summary: FinetuneResult, batches: _Batches, tconfig) -> int:
    """The trained model as a candidate whose parent is the base candidate, with its training metrics."""
    cand_config = {
        "prompt": job.cfg.as_dict(),
        "method": job.method,
        "base": job.ref,
        "data_hash": batches.digest,
        "data": job.data.fingerprint,
        "train": tconfig.as_dict(),
        "adapt": job.aspec.model_dump(mode="json"),
        "trainable_params": summary.trainable_params,
        "total_params": summary.total_params,
    }
    store = job.project.store
    cand_id = store.upsert_candidate(summary.candidate, "adapt", summary.model_ref, cand_config, job.parent_id, run.id)
    val_after = summary.val_loss["after"]
    run.log_metrics(
        {
            "trainable_params": summary.trainable_params,
            "trainable_pct": summary.trainable_pct,
            "train_tokens_per_s": summary.tokens_per_s,
            "train_wall_s": summary.wall_s,
            "train_peak_memory_gb": summary.peak_memory_gb,
            "memory_estimate_gb": summary.memory_estimate_gb,
            **({"val_loss": val_after} if val_after is not None else {}),
        },
        candidate_id=cand_id,
        split="train",
    )
    return cand_id


def _evaluate_candidate(
    job: _Job, run, trainee, base: _Base, model_dir: Path, cand_id, summary, *, engine, limit, batch_size
):
    """Score the trained model, still in memory, through an engine on ``adapt.eval_splits``."""
    from odyssey.engines import open_engine
    from odyssey.models.loading import LoadedModel

    project, spec = job.project, job.project.spec
    _release_training_memory(trainee.model)
    live = LoadedModel(str(model_dir), model_dir, trainee.model, base.tokenizer, base.loaded.family, base.loaded.dtype)
    with open_engine(
        str(model_dir),
        root=project.root,
        evaluate=spec.evaluate,
        engine=engine,
        loaded=live,
        batch_size=batch_size or spec.evaluate.batch_size,
        log_dir=project.state_dir,
    ) as gen:
        _evaluate(
            project,
            run,
            gen,
            job.cfg,
            cand_id,
            summary,
            limit=limit,
            batch_size=batch_size,
            splits=job.aspec.eval_splits,
        )


def _release_training_memory(model) -> None:
    """Drop the gradients and hand the training's freed C heap back to the OS before evaluating: the
    evaluation's ``memory_gb`` is what the serving-memory gate (``scope.constraints.memory_gb``) judges,
    and without this it read the resident set the training peak left behind (glibc keeps freed pages)."""
    import gc

    from odyssey.models.memory import trim_heap

    for p in model.parameters():
        p.grad = None
    gc.collect()
    trim_heap()


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class _NullRun:
    id = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _evaluate(project, run, loaded, cfg, cand_id, summary, *, limit, batch_size, splits):
    from odyssey.evaluate import check_gates, run_harness
    from odyssey.evaluate.report import write_report

    spec, store = project.spec, project.store
    data = project.dataset()
    for split in splits:
        examples = data.splits.get(split, [])[: limit or spec.evaluate.limit or None]
        if not examples:
            continue
        result = run_harness(
            loaded,
            examples,
            cfg,
            spec.scope,
            batch_size=batch_size or spec.evaluate.batch_size,
            description=f"{summary.candidate} on {split}",
        )
        result.metrics["n_params"] = summary.total_params
        store.add_outputs(run.id, result.rows, candidate_id=cand_id, split=split)
        run.log_metrics(result.metrics, candidate_id=cand_id, split=split)
        summary.metrics[split] = result.metrics
        summary.notes.extend(f"{split}: {n}" for n in result.notes)
        if split == "test" or split == splits[-1]:
            summary.gates = check_gates(spec.scope, result.metrics)
            summary.report = write_report(project, run, summary.candidate, split, result, summary.gates)


# ---- merge -------------------------------------------------------------------------------------


def merge(project, candidate: str | None = None) -> MergeResult:
    """Merge a LoRA candidate's adapter into its base weights: a plain checkpoint, recorded as a candidate."""
    from odyssey.models import load

    store = project.store
    if candidate is None:
        loras = [c for c in store.candidates() if c["stage"] == "adapt" and c["config"].get("method") == "lora"]
        if not loras:
            raise OdysseyError("no LoRA candidate to merge", hint="run `odyssey finetune --method lora` first")
        row = loras[-1]
    else:
        row = store.candidate(candidate)
        if row is None:
            known = ", ".join(c["name"] for c in store.candidates()) or "none yet"
            raise OdysseyError(f"no candidate named {candidate!r}", hint=f"candidates: {known}")
    method = row["config"].get("method")
    if method != "lora":
        raise OdysseyError(
            f"candidate {row['name']!r} is not a LoRA adapter (method: {method or 'none'}); "
            "only LoRA weights fold into the base",
            hint="pick a candidate made with --method lora",
        )
    src = Path(row["model_ref"])
    with store.run("adapt", project.spec.as_dict(), {"merge": row["name"]}) as run:
        with ui.status(f"loading {row['name']}") as update:
            loaded = load(str(src), root=project.root, dtype="float32", progress=update)
        merged = loaded.model.merge_and_unload()
        out = src.parent / "merged"
        tmp = out.with_name("merged.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        merged.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        name = f"{row['name']}-merged"
        config = {**row["config"], "merged_from": row["name"]}
        store.upsert_candidate(name, "adapt", str(out), config, row["id"], run.id)
        run.set_summary({"merged": row["name"], "candidate": name, "path": str(out)})
    return MergeResult(name, str(out), row["name"])


__all__ = ["FinetuneResult", "MergeResult", "finetune", "merge", "base_setup"]
