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


def memory_estimate_gb(model, method: str, trainable: int, total: int, groups, seq2seq: bool) -> float:
    """This run's training memory for its largest batch: the one estimate (odyssey.models.memory), which
    ``odyssey plan`` reports for the same job, less the runtime (the measured peak here is counted from
    what the process held before the model)."""
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
    from odyssey.adapt.finetune_methods import DEFAULT_LR, apply_method, count_params, load_quantized
    from odyssey.models import FAMILY_DECODER, FAMILY_SEQ2SEQ, load
    from odyssey.models.loading import LoadedModel
    from odyssey.prompts import PromptConfig
    from odyssey.training import TrainConfig, train, world
    from odyssey.training.sft import Collator, SFTModule, data_hash, encode_example, mean_loss, sft_loss

    if name is not None:
        check_name(name, "candidate name")  # before any work: it names the working folder
    spec = project.spec
    aspec = spec.adapt.model_copy(
        update={k: v for k, v in {"method": method, "max_steps": max_steps, "epochs": epochs}.items() if v is not None}
    )
    method = aspec.method
    if method not in {"full", "lora", "prompt_tuning"}:
        raise OdysseyError(f"unknown fine-tuning method {method!r}", hint="use --method full, lora or prompt_tuning")
    rank, world_size = world()
    main = rank == 0
    ref, slug, cfg, parent_id, parent_name = base_setup(project, model, write=main)
    data = project.dataset()
    train_examples = list(data.splits.get("train", []))
    if not train_examples:
        raise OdysseyError(
            "fine-tuning needs training data: the train split is empty",
            hint="set scope.data.splits.train above 0, or give a train file in scope.data.source",
        )
    mixed = _mix_examples(project, aspec, len(train_examples), aspec.seed)
    validation = data.splits.get("validation", [])[: aspec.val_limit or None]

    from odyssey.models.memory import trim_heap
    from odyssey.training import rss_gb

    trim_heap()  # an earlier run's freed heap would otherwise count as "before" (see trim_heap)
    rss_before = rss_gb()  # what the process held before the model: subtracted from the measured peak
    with ui.status(f"loading {ref}") as update:
        loaded = load(ref, root=project.root, dtype="float32", progress=update)
    if loaded.family not in (FAMILY_DECODER, FAMILY_SEQ2SEQ):
        raise OdysseyError(
            f"{ref} is an {loaded.family} model: instruction fine-tuning needs a model that generates",
            hint="pick a decoder-only or encoder-decoder model in adapt.model",
        )
    seq2seq = loaded.family == FAMILY_SEQ2SEQ
    tokenizer = loaded.tokenizer
    base_model = loaded.model
    if aspec.lora.quantize and method == "lora":
        base_model = load_quantized(loaded.path, aspec.lora.quantize, seq2seq)

    encode = lambda ex, c=cfg: encode_example(tokenizer, c, ex, max_len=aspec.max_seq_len, seq2seq=seq2seq)  # noqa: E731
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
    notes = []
    cut = sum(1 for e in items if e.truncated)
    if cut:
        notes.append(f"{cut} of {len(items)} training inputs were cut to adapt.max_seq_len={aspec.max_seq_len}")
    digest = data_hash(items)
    if aspec.packing == "pack" and (seq2seq or method == "prompt_tuning"):
        # PEFT's soft prompts ignore position_ids (which keep packed examples apart); seq2seq has no rows to pack
        notes.append(
            f"packing does not apply to {'seq2seq models' if seq2seq else 'prompt tuning'}: "
            "length-bucketed batches instead"
        )
        aspec = aspec.model_copy(update={"packing": "bucket"})
    groups = _groups(items, aspec, seq2seq=seq2seq, seed=aspec.seed)
    packed = aspec.packing == "pack"
    collator = Collator(tokenizer.pad_token_id, seq2seq=seq2seq, packed=packed)
    eval_collator = Collator(tokenizer.pad_token_id, seq2seq=seq2seq)
    from odyssey.training.sft import bucket_groups

    val_groups = (
        bucket_groups(val_items, batch_tokens=aspec.batch_tokens, batch_size=aspec.batch_size, seq2seq=seq2seq)
        if val_items
        else []
    )
    general = None
    if aspec.general_set:
        general_items = [encode(ex) for ex in _general_examples(project, aspec)]
        general = bucket_groups(
            general_items, batch_tokens=aspec.batch_tokens, batch_size=aspec.batch_size, seq2seq=seq2seq
        )
    dev = loaded.model.device
    general_before = mean_loss(base_model, general, eval_collator, dev) if general else None

    import torch

    torch.manual_seed(aspec.seed)  # LoRA's A matrices and random soft prompts are drawn here: same seed, same run
    trained = apply_method(
        base_model, method, aspec, seq2seq=seq2seq, tokenizer_path=loaded.path, instruction=cfg.instruction
    )
    n_trainable, n_total = count_params(trained)
    estimate = memory_estimate_gb(base_model, method, n_trainable, n_total, groups, seq2seq)
    ui.say(
        f"{method} fine-tuning of {ref} - {n_trainable:,} of {n_total:,} parameters train "
        f"({100 * n_trainable / max(n_total, 1):.3f}%); memory estimate {estimate:.2f} GB; "
        f"{len(items)} examples in {len(groups)} batches ({aspec.packing})"
    )

    named = project.state_dir / ADAPT_DIR / re.sub(r"[^\w.-]", "-", name) if name else None  # tiny-llama-lora-tune-3
    out = named or workdir(project, slug, method)
    train_dir = out / "train"
    if main and not resume:
        shutil.rmtree(train_dir, ignore_errors=True)
    from odyssey.training import latest_checkpoint

    if resume and latest_checkpoint(train_dir) is None:
        notes.append(f"--resume: no checkpoint in {train_dir}; started from the beginning")
        ui.say(notes[-1])
    lr = aspec.learning_rate or DEFAULT_LR[method]
    tconfig = TrainConfig(
        output_dir=train_dir,
        max_steps=aspec.max_steps,
        epochs=aspec.epochs,
        learning_rate=lr,
        lr_scheduler=aspec.lr_scheduler,
        warmup_steps=aspec.warmup_steps,
        weight_decay=aspec.weight_decay,
        batch_size=world_size,
        grad_accum=aspec.grad_accum,
        seed=aspec.seed,
        precision=aspec.precision,
        gradient_checkpointing=aspec.gradient_checkpointing,
        log_every=max(1, min(10, len(groups) // 4 or 1)),
        eval_every=aspec.eval_every if val_groups else None,
        save_every=aspec.save_every,
        early_stopping_patience=aspec.early_stopping_patience,
        keep_best=aspec.keep_best and bool(val_groups),
    )
    eval_fn = (lambda m: {"val_loss": mean_loss(m.model, val_groups, eval_collator, dev)}) if val_groups else None
    module = SFTModule(trained)
    val_before = mean_loss(trained, val_groups, eval_collator, dev) if val_groups else None

    store = project.store if main else None
    run_config = {
        "method": method,
        "base": ref,
        "data_hash": digest,
        "data": data.fingerprint,
        "n_examples": len(items),
        "train": tconfig.as_dict(),
        "adapt": aspec.model_dump(mode="json"),
        "prompt": cfg.as_dict(),
        "world_size": world_size,
    }
    run_ctx = store.run("adapt", spec.as_dict(), run_config) if main else _NullRun()
    with run_ctx as run:

        def log(entry):
            if main:
                run.log_metrics(
                    {f"train/{k}": v for k, v in entry.items() if isinstance(v, (int, float)) and k != "step"},
                    step=entry.get("step"),
                )
            if on_eval is not None and "val_loss" in entry:
                on_eval(entry["step"], entry)

        result = train(
            module,
            groups,
            sft_loss,
            tconfig,
            eval_fn=eval_fn,
            collate_fn=collator,
            resume=resume,
            trainable_params=[p for p in trained.parameters() if p.requires_grad],
            description=f"{method} fine-tuning",
            on_log=log,
        )
        trained.eval()
        evals = [h["val_loss"] for h in result.history if "val_loss" in h]
        if val_groups and (not evals or (result.best and result.best["step"] != result.steps)):
            val_after = mean_loss(trained, val_groups, eval_collator, dev)  # the best weights were loaded back
        else:
            val_after = evals[-1] if evals else None
        forgetting = None
        if general is not None:
            after = mean_loss(trained, general, eval_collator, dev)
            forgetting = {
                "general_loss_before": general_before,
                "general_loss_after": after,
                "increase": after - general_before,
            }
            if after > general_before * 1.05:
                notes.append(f"forgetting: loss on the general set rose from {general_before:.3f} to {after:.3f}")
        summary = FinetuneResult(
            run_id=getattr(run, "id", None),
            candidate=name or f"{slug}:{method}",
            model_ref="",
            method=method,
            base=ref,
            parent=parent_name,
            trainable_params=n_trainable,
            total_params=n_total,
            steps=result.steps,
            tokens=result.tokens,
            wall_s=result.wall_s,
            tokens_per_s=result.tokens_per_s,
            peak_memory_gb=max(result.peak_memory_gb - (0 if _on_gpu() else rss_before), 0.0),
            memory_estimate_gb=estimate,
            train_loss=result.final_loss,
            val_loss={"before": val_before, "after": val_after, "best": result.best},
            data_hash=digest,
            resumed_from=result.resumed_from,
            stopped_early=result.stopped_early,
            forgetting=forgetting,
            notes=notes,
        )
        if not main:
            return summary
        model_dir = _save_model(trained, tokenizer, method, ref, out / "model")
        summary.model_ref = str(model_dir)
        train_summary = {k: v for k, v in summary.as_dict().items() if k not in {"metrics", "gates", "report"}}
        cand_config = {
            "prompt": cfg.as_dict(),
            "method": method,
            "base": ref,
            "data_hash": digest,
            "data": data.fingerprint,
            "train": tconfig.as_dict(),
            "adapt": aspec.model_dump(mode="json"),
            "trainable_params": n_trainable,
            "total_params": n_total,
        }
        cand_id = store.upsert_candidate(summary.candidate, "adapt", str(model_dir), cand_config, parent_id, run.id)
        run.log_metrics(
            {
                "trainable_params": n_trainable,
                "trainable_pct": summary.trainable_pct,
                "train_tokens_per_s": result.tokens_per_s,
                "train_wall_s": result.wall_s,
                "train_peak_memory_gb": summary.peak_memory_gb,
                "memory_estimate_gb": estimate,
                **({"val_loss": val_after} if val_after is not None else {}),
            },
            candidate_id=cand_id,
            split="train",
        )
        history = out / "history.json"
        history.write_text(json.dumps(result.history, indent=1))
        run.add_artifact(history, "train-history")
        if evaluate:
            _release_training_memory(trained)
            from odyssey.engines import open_engine

            live = LoadedModel(str(model_dir), model_dir, trained, tokenizer, loaded.family, loaded.dtype)
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
                    cfg,
                    cand_id,
                    summary,
                    limit=limit,
                    batch_size=batch_size,
                    splits=aspec.eval_splits,
                )
        run.set_summary(train_summary | {"metrics": summary.metrics})
    return summary


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
