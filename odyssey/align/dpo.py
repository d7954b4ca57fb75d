"""Offline preference optimization on the one training loop: DPO, KTO, ORPO and SimPO on the stored
preference pairs (KTO also on people's thumbs up/down), and TRL's online RLOO / GRPO with the reward
model (or the offensiveness score) as their reward function (``--algo rloo|grpo``).

Each offline method is a loss of :mod:`odyssey.training.preference` on :func:`odyssey.training.train`,
so all of them get the loop's checkpoints, exact resume (``--resume``), progress bar, validation loss
and early stopping (``held_out``, ``eval_every``, ``early_stopping_patience``):

- ``dpo``: raises the policy's log-probability ratio to the frozen reference of chosen over rejected
  answers. With LoRA (the default) the reference is the same network with the adapter switched off;
  its log-probs are computed once before training and cached beside the checkpoints, so training runs
  one model. ``reference_free`` sets them to zero (the loss then compares the policy's own log-probs);
- ``kto``: desirable / undesirable answers one at a time, against the reference and a KL baseline;
- ``orpo``: SFT on the chosen answer plus an odds-ratio term, no reference;
- ``simpo``: length-normalized log-probs as the reward with a target margin, no reference.

Every method records a candidate ``<parent>+<method>`` (a merged checkpoint) with its settings, and
``odyssey align compare`` ranks them on the same test rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from odyssey.align.common import preference_train_config, quiet_libraries
from odyssey.errors import OdysseyError, require

OFFLINE_METHODS = ("dpo", "kto", "orpo", "simpo")


def method_settings(project, method: str, overrides: dict):
    """The method's spec section (``align.<method>``) with the call's overrides, validated."""
    from pydantic import ValidationError

    if method not in OFFLINE_METHODS:
        raise OdysseyError(
            f"unknown preference method {method!r}",
            hint=f"use one of {', '.join(OFFLINE_METHODS)} (ppo, rloo and grpo: `odyssey align ppo --algo ...`)",
        )
    section = getattr(project.spec.align, method)
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return type(section).model_validate({**section.model_dump(), **given})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise OdysseyError(
            f"align.{method} settings {given} are invalid: {problems}",
            hint=f"the settings of align.{method} are: {', '.join(type(section).model_fields)}",
        ) from None


def _loss_fn(method: str, cfg):
    from odyssey.training.preference import DPOLoss, KTOLoss, ORPOLoss, SimPOLoss

    if method == "dpo":
        return DPOLoss(cfg.beta, cfg.loss_type, cfg.label_smoothing)
    if method == "kto":
        return KTOLoss(cfg.beta, cfg.desirable_weight, cfg.undesirable_weight)
    if method == "orpo":
        return ORPOLoss(cfg.beta, cfg.nll_on_prompt)
    return SimPOLoss(cfg.beta, cfg.gamma)


def _needs_reference(method: str, cfg) -> bool:
    return method == "kto" or (method == "dpo" and not cfg.reference_free)


def _split(rows: list[dict], held_out: float, seed: int) -> tuple[list[dict], list[dict]]:
    from odyssey.align.preferences import PreferenceSet

    return PreferenceSet(rows).split(held_out, seed) if held_out else (rows, [])


def _data(project, method: str, cfg, preference_set) -> tuple[list[dict], list[dict], dict]:
    """(training rows, held-out rows, what they are): pairs, or for KTO judged answers."""
    from odyssey.align.preferences import load_preference_set

    info: dict = {}
    use_pairs = method != "kto" or cfg.data in {"pairs", "both"}
    pairs = ([], [])
    if use_pairs:
        pset = load_preference_set(project, preference_set)
        info.update(preference_set=pset.id, preference_sha256=pset.sha256, pairs=len(pset.pairs))
        pairs = _split(pset.pairs, cfg.held_out, cfg.seed)
    if method != "kto":
        return pairs[0], pairs[1], info
    from odyssey.align import unpaired

    train, held = unpaired.from_pairs(pairs[0]), unpaired.from_pairs(pairs[1])
    if cfg.data in {"feedback", "both"}:
        judged = unpaired.feedback_examples(project.store)
        info["feedback_answers"] = len(judged)
        more = _split(judged, cfg.held_out, cfg.seed)
        train, held = train + more[0], held + more[1]
    unpaired.check_balance(train, f"align.kto.data: {cfg.data}")
    return train, held, info


def _fingerprint(rows: list[dict]) -> str:
    keys = ("prompt", "chosen", "rejected", "completion", "desirable")
    text = json.dumps([[r.get(k) for k in keys] for r in rows], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _encode(tok, method: str, cfg, rows: list[dict]):
    """(items, collator, how many rows were dropped because their prompt fills max_length)."""
    from odyssey.training import preference as pref

    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if method == "kto":
        items, dropped = pref.encode_unpaired(tok, rows, cfg.max_length, kl_group=cfg.micro_batch)
        return items, pref.UnpairedCollator(pad_id), dropped
    items, dropped = pref.encode_pairs(tok, rows, cfg.max_length)
    return items, pref.PairCollator(pad_id, lm_labels=method == "orpo" and cfg.nll_on_prompt), dropped


def _policy(model, cfg):
    """The model to train: a fresh LoRA adapter on the (merged) start, or every weight."""
    if not cfg.lora:
        return model
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)  # the adapter's initialization: the same settings give the same run

    lora = LoraConfig(
        task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0, target_modules="all-linear"
    )
    return get_peft_model(model, lora)


def _rows_and_length(item) -> tuple[int, int]:
    """Rows one item puts through the policy (chosen and rejected; KTO: its answer and its KL row), and
    the longest of them in tokens."""
    from odyssey.training.preference import Pair

    answers = (item.chosen_ids, item.rejected_ids) if isinstance(item, Pair) else (item.completion_ids, item.kl_ids)
    return len(answers), max(len(item.prompt_ids) + len(a) for a in answers)


def memory_estimate_gb(model, cfg, items: list, micro_batch: int) -> float:
    """Training memory of the largest micro-batch (rows x its longest row, as the collator pads it): the one
    estimate (:func:`odyssey.models.memory.job_components`) of the policy, a LoRA adapter on every linear
    (no dropout) or every weight. The reference pass runs without gradients, so it adds nothing at the peak."""
    from odyssey.models.memory import Shape, job_components
    from odyssey.training import preference as pref
    from odyssey.training.lora import lora_param_count

    shapes = [
        [_rows_and_length(item) for item in group] for group in pref.preference_groups(items, micro_batch, cfg.seed)
    ]
    rows, seq = max(((sum(r for r, _ in g), max(n for _, n in g)) for g in shapes), key=lambda rs: rs[0] * rs[1])
    n_params = sum(p.numel() for p in model.parameters())
    parts = job_components(
        Shape.from_config(model.config, n_params),
        "lora" if cfg.lora else "full",
        batch=rows,
        seq=seq,
        trainable=lora_param_count(model, cfg.lora_r, "all-linear") if cfg.lora else n_params,
        cpu_heap=next(model.parameters()).device.type == "cpu",
    )
    return sum(parts.values())


def check_memory(project, method: str, cfg, model, items: list) -> float:
    """The estimate for this run, or a clear error before any work if it exceeds what the scope's hardware
    (``scope.constraints.hardware``; 'auto' is this machine) can give; the hint names the smallest
    ``grad_accum`` that fits. A DPO run of SmolLM2 at 8 pairs x 640 tokens in one micro-batch was OOM-killed
    at 24.3 GB on a 24 GB machine; this check (about 33 GB) refuses it and advises grad_accum 2."""
    from odyssey.models.hardware import USABLE_FRACTION, Hardware

    hardware = project.spec.scope.constraints.hardware
    available = Hardware.parse(hardware).memory_gb * USABLE_FRACTION
    needed = memory_estimate_gb(model, cfg, items, cfg.micro_batch)
    if needed <= available:
        return needed
    fits = [
        k
        for k in range(cfg.grad_accum + 1, cfg.batch_size + 1)
        if cfg.batch_size % k == 0 and memory_estimate_gb(model, cfg, items, cfg.batch_size // k) <= available
    ]
    advice = (
        f"set align.{method}.grad_accum: {fits[0]} (the same step in micro-batches of {cfg.batch_size // fits[0]})"
        if fits
        else f"lower align.{method}.max_length ({cfg.max_length}), train LoRA (align.{method}.lora: true) or use more memory"
    )
    raise OdysseyError(
        f"align.{method}: a micro-batch of {cfg.micro_batch} (batch_size {cfg.batch_size} / grad_accum "
        f"{cfg.grad_accum}) needs about {needed:.2f} GB to train; {available:.2f} GB is usable on "
        f"scope.constraints.hardware {hardware!r}",
        hint=advice,
    )


def _cached_reference(model, groups: list[list], collator, work: Path, shared: Path) -> None:
    """Reference log-probs for every item, computed once with the frozen model.

    Pairs (DPO) depend only on their own tokens and the start model, so they are cached per pair in
    ``shared`` (one file per start model): a run with other settings (grad_accum, lr, epochs) or more
    pairs reuses them and computes only the new ones (at 640 pairs x 640 tokens the pass takes 11 min
    on 2 cores). KTO's KL terms depend on which answers share a micro-batch, so its cache is the whole
    ordered list, in the run's own folder ``work``."""
    if hasattr(groups[0][0], "ref_chosen"):
        _cached_pair_reference(model, groups, collator, shared)
    else:
        _cached_ordered_reference(model, groups, collator, work / "reference.json")


def _item_key(item, fields: tuple[str, ...]) -> list:
    return [v for k, v in vars(item).items() if k not in fields]


def _cached_pair_reference(model, groups: list[list], collator, path: Path) -> None:
    from odyssey.models.checkpoint import atomic_file
    from odyssey.training.preference import reference_logps

    fields = ("ref_chosen", "ref_rejected")
    keyed = [
        [(hashlib.sha256(json.dumps(_item_key(item, fields)).encode()).hexdigest(), item) for item in group]
        for group in groups
    ]
    cache = json.loads(path.read_text()).get("values", {}) if path.exists() else {}
    missing = [group for group in keyed if any(key not in cache for key, _ in group)]
    if missing:
        reference_logps(model, [[item for _, item in group] for group in missing], collator)
        cache.update({key: [getattr(item, n) for n in fields] for group in missing for key, item in group})
        atomic_file(path, lambda tmp: tmp.write_text(json.dumps({"values": cache})))
    for group in keyed:
        for key, item in group:
            for name, value in zip(fields, cache[key]):
                setattr(item, name, value)


def _cached_ordered_reference(model, groups: list[list], collator, path: Path) -> None:
    """Read from ``path`` when it holds the values for these very items in this order, else compute."""
    from odyssey.models.checkpoint import atomic_file
    from odyssey.training.preference import reference_logps

    items = [item for group in groups for item in group]
    fields = ("ref", "ref_kl")
    key = hashlib.sha256(json.dumps([_item_key(item, fields) for item in items]).encode()).hexdigest()
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            for item, values in zip(items, cached["values"]):
                for name, value in zip(fields, values):
                    setattr(item, name, value)
            return
    reference_logps(model, groups, collator)
    values = [[getattr(item, name) for name in fields] for item in items]
    atomic_file(path, lambda tmp: tmp.write_text(json.dumps({"key": key, "values": values})))


def _eval_fn(loss_fn, groups: list[list], collator):
    """Validation: the loss and its metrics on the held-out groups, averaged (``val_loss``, ``val_*``)."""
    if not groups:
        return None
    from odyssey.training import to_device

    def evaluate(module):
        device = next(module.parameters()).device
        sums: dict[str, list[float]] = {}
        for group in groups:
            loss, metrics = loss_fn(module, to_device(collator([group]), device))
            sums.setdefault("val_loss", []).append(float(loss))
            for key, value in metrics.items():
                if key != "tokens":
                    sums.setdefault(f"val_{key}", []).append(float(value))
        return {k: sum(v) / len(v) for k, v in sums.items()}

    return evaluate


def _summary_metrics(history: list[dict], wall: float) -> dict[str, float]:
    last = next((h for h in reversed(history) if "loss" in h), {})
    val = next((h for h in reversed(history) if "val_loss" in h), {})
    metrics = {
        "train_loss": last.get("loss"),
        "train_reward_accuracy": last.get("rewards/accuracies"),
        "train_reward_margin": last.get("rewards/margins"),
        "val_loss": val.get("val_loss"),
        "val_reward_accuracy": val.get("val_rewards/accuracies"),
        "wall_s": wall,
    }
    return {k: float(v) for k, v in metrics.items() if v is not None}


def train_preference(
    project,
    method: str = "dpo",
    *,
    preference_set: int | str | None = None,
    start: str | None = None,
    resume: bool = False,
    evaluate: bool = True,
    name: str | None = None,
    reward_model: int | str | None = None,
    **overrides,
):
    """Align the start candidate with one offline preference method on the one loop; returns an ``AlignResult``."""
    from odyssey.align.common import ensure_candidate_row, load_trainable_start, starting_candidate

    cfg = method_settings(project, method, overrides)
    if method == "kto" and cfg.micro_batch < 2:
        # KTO's KL baseline is taken within each micro-batch, as TRL's KTOTrainer takes it per device batch
        raise OdysseyError(
            f"align.kto.batch_size={cfg.batch_size}, grad_accum={cfg.grad_accum}: {cfg.micro_batch} answer per "
            "micro-batch; KTO's KL baseline pairs each prompt with another answer of its micro-batch",
            hint="make align.kto.batch_size / align.kto.grad_accum at least 2",
        )
    quiet_libraries()
    begin = starting_candidate(project, start)
    parent_id = ensure_candidate_row(project, begin)
    train_rows, held_rows, info = _data(project, method, cfg, preference_set)
    loaded = load_trainable_start(project, begin)
    items, collator, dropped = _encode(loaded.tokenizer, method, cfg, train_rows)
    held_items, _, _ = _encode(loaded.tokenizer, method, cfg, held_rows)
    if not items:
        raise OdysseyError(
            f"every one of {len(train_rows)} training examples has a prompt of {cfg.max_length} tokens or more",
            hint=f"raise align.{method}.max_length",
        )
    info["memory_estimate_gb"] = round(check_memory(project, method, cfg, loaded.model, items), 3)
    data_sha = _fingerprint(train_rows + held_rows)
    key = hashlib.sha256(f"{method}|{begin.model_ref}|{data_sha}|{cfg.model_dump_json()}".encode()).hexdigest()[:12]
    work = project.state_dir / "align" / f"{method}-{key}"
    if not resume:
        shutil.rmtree(work / "train", ignore_errors=True)  # a fresh run never continues an old one's checkpoints
    info.update(examples=len(items), held_out_examples=len(held_items), dropped=dropped, data_sha256=data_sha)
    settings = {"action": method, "start": begin.as_dict(), **info, method: cfg.model_dump()}
    with project.store.run("align", project.spec.as_dict(), settings) as run:
        fitted = _fit(loaded, method, cfg, items, held_items, collator, work, run, resume)
        aligned = _record(project, method, cfg, begin, parent_id, run, loaded, fitted, info, name)
    del fitted, loaded  # the comparison loads the candidates it compares
    if evaluate:
        from odyssey.align.evaluation import evaluate_aligned

        aligned.evaluation = evaluate_aligned(project, aligned.candidate, begin.name, reward_model=reward_model)
        aligned.warnings += aligned.evaluation.get("warnings", [])
    return aligned


def _fit(loaded, method, cfg, items, held_items, collator, work, run, resume):
    """Reference log-probs (once, cached), then the loop; returns (model, TrainResult, wall seconds)."""
    from odyssey.training import train
    from odyssey.training.preference import PreferenceModule, preference_groups

    model = _policy(loaded.model, cfg)
    groups = preference_groups(items, cfg.micro_batch, cfg.seed)
    held = preference_groups(held_items, cfg.micro_batch, cfg.seed)
    if _needs_reference(method, cfg):
        start_id = f"{loaded.path}|{loaded.dtype}"  # the frozen reference: the start model as loaded
        shared = work.parent / f"reference-{hashlib.sha256(start_id.encode()).hexdigest()[:12]}.json"
        _cached_reference(model, groups + held, collator, work, shared)
    loss_fn = _loss_fn(method, cfg)

    def log(entry):
        run.log_metrics({f"train/{k}": v for k, v in entry.items() if k != "step"}, step=entry.get("step"))

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # keep --json output clean of anything a library prints
        result = train(
            PreferenceModule(model),
            groups,
            loss_fn,
            preference_train_config(work, cfg),
            eval_fn=_eval_fn(loss_fn, held, collator),
            collate_fn=collator,
            resume=resume,
            description=method,
            on_log=log,
        )
    return model, result, time.perf_counter() - t0


def _record(project, method, cfg, begin, parent_id, run, loaded, fitted, info, name):
    """Save the merged model as candidate ``<parent>+<method>`` and log its metrics and history."""
    from odyssey.align.common import AlignResult, save_merged

    model, result, wall = fitted
    out = save_merged(model, loaded.tokenizer, run.artifacts_dir / "model")
    cand_name = name or f"{begin.name}+{method}"
    metrics = _summary_metrics(result.history, wall)
    # the estimate leaves out what the process held before the model; the peak is the whole process's
    metrics.update(memory_estimate_gb=info["memory_estimate_gb"], train_peak_rss_gb=result.peak_memory_gb)
    config = {
        "prompt": begin.prompt.as_dict(),
        "align": {
            "method": method,
            "parent": begin.name,
            **cfg.model_dump(),
            **{k: info[k] for k in ("preference_set", "preference_sha256", "data_sha256") if k in info},
            "run_id": run.id,
            "start_note": begin.note,
        },
    }
    cand_id = project.store.upsert_candidate(cand_name, "align", str(out), config, parent_id, run.id)
    run.log_metrics(metrics, candidate_id=cand_id)
    run.set_summary(
        {
            "candidate": cand_name,
            "metrics": metrics,
            "history": result.history,
            "steps": result.steps,
            "resumed_from": result.resumed_from,
            "stopped_early": result.stopped_early,
            "start_note": begin.note,
            **info,
        }
    )
    aligned = AlignResult(
        cand_name, cand_id, begin.name, method, str(out), run.id, result.history, metrics, wall_s=wall
    )
    if info.get("dropped"):
        aligned.warnings.append(
            f"{info['dropped']} training example(s) dropped: their prompt alone fills align.{method}.max_length"
        )
    return aligned


def train_dpo(project, **kwargs):
    """DPO on the stored preference pairs (``align.dpo``); see :func:`train_preference`."""
    return train_preference(project, "dpo", **kwargs)


def train_kto(project, **kwargs):
    """KTO on judged answers (``align.kto``: pairs split in two, or people's thumbs); see :func:`train_preference`."""
    return train_preference(project, "kto", **kwargs)


def train_orpo(project, **kwargs):
    """ORPO on the stored preference pairs (``align.orpo``); see :func:`train_preference`."""
    return train_preference(project, "orpo", **kwargs)


def train_simpo(project, **kwargs):
    """SimPO on the stored preference pairs (``align.simpo``); see :func:`train_preference`."""
    return train_preference(project, "simpo", **kwargs)


def _trl(what: str):
    """TRL, or the install hint naming the align extra."""
    return require("trl", "align", what)


def trl_online(
    project,
    algo: str,
    *,
    reward: str = "model",
    reward_model: int | str | None = None,
    start: str | None = None,
    steps: int | None = None,
    evaluate: bool = True,
    name: str | None = None,
    **overrides,
):
    """TRL's RLOO or GRPO trainer: several samples per prompt, advantages from the group's rewards,
    KL to the reference with coefficient beta (align.ppo.kl_coef).

    These stay on TRL's trainers: they generate their training data online (sampling, a reward call per
    answer, vLLM when present), which is a recipe rather than a loss on fixed batches; TRL's own
    checkpoints apply and there is no resume here (the loop's exact resume covers the offline methods)."""
    from datasets import Dataset

    from odyssey.align.common import (
        AlignResult,
        ensure_candidate_row,
        load_trainable_start,
        save_merged,
        starting_candidate,
    )
    from odyssey.align.online import compare_with_parent, reward_function, training_prompts

    if algo not in {"rloo", "grpo"}:
        raise OdysseyError(f"unknown algorithm {algo!r}", hint="use ppo, rloo or grpo")
    quiet_libraries()
    trl = _trl(f"{algo} alignment")
    cfg = _online_settings(project, algo, overrides)
    begin = starting_candidate(project, start)
    parent_id = ensure_candidate_row(project, begin)
    score_fn, reward_info = reward_function(project, reward, reward_model)

    def reward_func(prompts, completions, **_):
        return [float(s) for s in score_fn(list(prompts), list(completions))]

    loaded = load_trainable_start(project, begin)
    prompts = training_prompts(project, begin, loaded, reward)
    n_steps = steps or cfg.steps
    trainer_cls, args, peft_config = _online_recipe(trl, project, algo, cfg, n_steps)
    data = Dataset.from_list([{"prompt": p} for p in prompts])
    t0 = time.perf_counter()
    settings = {
        "action": algo,
        "start": begin.as_dict(),
        **reward_info,
        "steps": n_steps,
        "num_generations": cfg.num_generations,
    }
    with project.store.run("align", project.spec.as_dict(), settings) as run:
        trainer = trainer_cls(
            model=loaded.model,
            reward_funcs=reward_func,
            args=args,
            train_dataset=data,
            processing_class=loaded.tokenizer,
            peft_config=peft_config,
        )
        _train_with_bar(trainer, algo, n_steps)
        history = [h for h in trainer.state.log_history if "reward" in h]
        wall = time.perf_counter() - t0
        out = save_merged(trainer.model, loaded.tokenizer, run.artifacts_dir / "model")
        cand_name = name or f"{begin.name}+{algo}"
        metrics = {"wall_s": wall, **({"train_reward": float(history[-1]["reward"])} if history else {})}
        config = _online_candidate_config(begin, algo, reward_info, n_steps, run.id)
        cand_id = project.store.upsert_candidate(cand_name, "align", str(out), config, parent_id, run.id)
        run.log_metrics(metrics, candidate_id=cand_id)
        run.set_summary({"candidate": cand_name, "metrics": metrics, "history": history})
    del trainer, loaded
    result = AlignResult(cand_name, cand_id, begin.name, algo, str(out), run.id, history, metrics, wall_s=wall)
    if evaluate:
        compare_with_parent(project, result, reward, reward_model, cfg.temperature)
    return result


def _online_candidate_config(begin, algo: str, reward_info: dict, n_steps: int, run_id: int) -> dict:
    return {
        "prompt": begin.prompt.as_dict(),
        "align": {"method": algo, "parent": begin.name, **reward_info, "steps": n_steps, "run_id": run_id},
    }


def _online_settings(project, algo: str, overrides: dict):
    """``align.ppo`` with the call's overrides; the batch must hold whole groups of ``num_generations``."""
    cfg = project.spec.align.ppo.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    group = cfg.num_generations
    if cfg.batch_size % group:
        fixed = (cfg.batch_size // group + 1) * group
        raise OdysseyError(
            f"align.ppo.batch_size={cfg.batch_size}: {algo} samples align.ppo.num_generations={group} "
            f"answers per prompt, so the batch size must be a multiple of {group}",
            hint=f"set align.ppo.batch_size to {fixed}",
        )
    return cfg


def _online_recipe(trl, project, algo: str, cfg, n_steps: int):
    """(trainer class, its config, the LoRA config) of TRL's RLOO or GRPO for these settings."""
    from peft import LoraConfig

    from odyssey import ui
    from odyssey.align.common import trl_cpu_args

    peft_config = LoraConfig(
        task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear"
    )
    config_cls, trainer_cls = (trl.RLOOConfig, trl.RLOOTrainer) if algo == "rloo" else (trl.GRPOConfig, trl.GRPOTrainer)
    args = config_cls(
        output_dir=str(project.state_dir / "align" / f"{algo}-work"),
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        num_generations=cfg.num_generations,
        max_steps=n_steps,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        beta=cfg.kl_coef,
        seed=cfg.seed,
        disable_tqdm=ui.quiet(),
        **trl_cpu_args(),
    )
    return trainer_cls, args, peft_config


def _train_with_bar(trainer, algo: str, n_steps: int) -> None:
    from transformers import PrinterCallback, ProgressCallback

    from odyssey import ui

    # TRL's own tqdm bar and log dicts (ProgressCallback) go; Odyssey's bar shows the step and reward
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    with ui.progress(algo, total=n_steps) as bar, contextlib.redirect_stdout(sys.stderr):
        trainer.add_callback(_bar_callback(bar))
        trainer.train()


def _bar_callback(bar):
    """A TrainerCallback moving Odyssey's progress bar a step at a time, with the latest reward and KL."""
    from transformers import TrainerCallback

    class BarCallback(TrainerCallback):
        fields: dict = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.fields = {k: round(float(logs[k]), 4) for k in ("reward", "kl") if logs and k in logs}

        def on_step_end(self, args, state, control, **kwargs):
            bar.advance(1, **self.fields)

    return BarCallback()
