"""DPO (TRL's ``DPOTrainer``) on the stored preference pairs, and TRL's online RLOO / GRPO trainers
with the reward model (or the offensiveness score) as their reward function (``--algo rloo|grpo``).

DPO needs no reward model and no sampling: it raises the policy's log-probability ratio (to the
frozen reference) of chosen over rejected answers, loss -log sigmoid(beta * (ratio_c - ratio_r)).
With LoRA (the default) the reference is the same network with the adapter switched off. The
reference-free variant sets the reference log-probs to zero (so the loss compares the policy's own
log-probs), through TRL's precomputed-reference path.
"""

from __future__ import annotations

import contextlib
import sys
import time

from odyssey.align.common import quiet_libraries
from odyssey.errors import OdysseyError, require


def _reference_free_trainer():
    trl = require("trl", "align", "DPO")

    class ReferenceFreeDPOTrainer(trl.DPOTrainer):
        """TRL reads precomputed reference log-probs from the dataset; zeros make the loss reference-free."""

        def _precompute_ref_logps(self, dataset, name, batch_size):
            zeros = [0.0] * len(dataset)
            return dataset.add_column("ref_chosen_logps", zeros).add_column("ref_rejected_logps", zeros)

    return ReferenceFreeDPOTrainer


def train_dpo(
    project,
    *,
    preference_set: int | str | None = None,
    start: str | None = None,
    resume: bool = False,
    evaluate: bool = True,
    name: str | None = None,
    reward_model: int | str | None = None,
    **overrides,
):
    import hashlib

    from datasets import Dataset

    trl = require("trl", "align", "DPO")
    DPOConfig, DPOTrainer = trl.DPOConfig, trl.DPOTrainer
    from odyssey.align.common import ensure_candidate_row, load_trainable_start, save_merged, starting_candidate
    from odyssey.align.ppo import AlignResult
    from odyssey.align.preferences import load_preference_set
    from odyssey.align.reward import cpu_training_args

    quiet_libraries()
    cfg = project.spec.align.dpo.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    begin = starting_candidate(project, start)
    parent_id = ensure_candidate_row(project, begin)
    pset = load_preference_set(project, preference_set)
    loaded = load_trainable_start(project, begin)
    tok = loaded.tokenizer
    key = hashlib.sha256(f"{begin.model_ref}|{pset.sha256}|{cfg.model_dump_json()}".encode()).hexdigest()[:12]
    work = project.state_dir / "align" / f"dpo-{key}"
    checkpoints = (
        sorted((work / "trainer").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) if resume else []
    )
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            task_type="CAUSAL_LM",
            r=cfg.lora_r,
            lora_alpha=2 * cfg.lora_r,
            lora_dropout=0.0,
            target_modules="all-linear",
        )
    from odyssey import ui

    args = DPOConfig(
        output_dir=str(work / "trainer"),
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        per_device_train_batch_size=cfg.batch_size,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        max_length=cfg.max_length,
        seed=cfg.seed,
        precompute_ref_log_probs=cfg.reference_free,
        disable_tqdm=ui.quiet(),
        **{**cpu_training_args(), "save_strategy": "steps", "save_steps": 25, "save_total_limit": 1},
    )
    data = Dataset.from_list(
        [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pset.pairs]
    )
    trainer_cls = _reference_free_trainer() if cfg.reference_free else DPOTrainer
    settings = {
        "action": "dpo",
        "start": begin.as_dict(),
        "preference_set": pset.id,
        "preference_sha256": pset.sha256,
        "pairs": len(pset.pairs),
        "dpo": cfg.model_dump(),
    }
    t0 = time.perf_counter()
    with project.store.run("align", project.spec.as_dict(), settings) as run:
        trainer = trainer_cls(
            model=loaded.model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config
        )
        with contextlib.redirect_stdout(sys.stderr):  # the HF Trainer prints its log dicts; keep --json clean
            trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
        history = [h for h in trainer.state.log_history if "loss" in h]
        wall = time.perf_counter() - t0
        out = save_merged(trainer.model, tok, run.artifacts_dir / "model")
        cand_name = name or f"{begin.name}+dpo"
        last = history[-1] if history else {}
        metrics = {
            "train_loss": last.get("loss"),
            "train_reward_accuracy": last.get("rewards/accuracies"),
            "train_reward_margin": last.get("rewards/margins"),
            "wall_s": wall,
        }
        metrics = {k: float(v) for k, v in metrics.items() if v is not None}
        config = {
            "prompt": begin.prompt.as_dict(),
            "align": {
                "method": "dpo",
                "parent": begin.name,
                "beta": cfg.beta,
                "loss_type": cfg.loss_type,
                "reference_free": cfg.reference_free,
                "preference_set": pset.id,
                "preference_sha256": pset.sha256,
                "run_id": run.id,
                "start_note": begin.note,
            },
        }
        cand_id = project.store.upsert_candidate(cand_name, "align", str(out), config, parent_id, run.id)
        run.log_metrics(metrics, candidate_id=cand_id)
        run.set_summary({"candidate": cand_name, "metrics": metrics, "history": history, "start_note": begin.note})
    del trainer, loaded
    result = AlignResult(cand_name, cand_id, begin.name, "dpo", str(out), run.id, history, metrics, wall_s=wall)
    if evaluate:
        from odyssey.align.evaluation import evaluate_aligned

        result.evaluation = evaluate_aligned(project, cand_name, begin.name, reward_model=reward_model)
        result.warnings += result.evaluation.get("warnings", [])
    return result


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
    KL to the reference with coefficient beta (align.ppo.kl_coef)."""
    from datasets import Dataset

    from odyssey.align.common import ensure_candidate_row, load_trainable_start, save_merged, starting_candidate
    from odyssey.align.ppo import AlignResult, reward_function, training_prompts
    from odyssey.align.reward import cpu_training_args

    if algo not in {"rloo", "grpo"}:
        raise OdysseyError(f"unknown algorithm {algo!r}", hint="use ppo, rloo or grpo")
    quiet_libraries()
    trl = require("trl", "align", f"{algo} alignment")

    cfg = project.spec.align.ppo.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    group = cfg.num_generations
    if cfg.batch_size % group:
        fixed = (cfg.batch_size // group + 1) * group
        raise OdysseyError(
            f"align.ppo.batch_size={cfg.batch_size}: {algo} samples align.ppo.num_generations={group} "
            f"answers per prompt, so the batch size must be a multiple of {group}",
            hint=f"set align.ppo.batch_size to {fixed}",
        )
    begin = starting_candidate(project, start)
    parent_id = ensure_candidate_row(project, begin)
    score_fn, reward_info = reward_function(project, reward, reward_model)

    def reward_func(prompts, completions, **_):
        return [float(s) for s in score_fn(list(prompts), list(completions))]

    loaded = load_trainable_start(project, begin)
    prompts = training_prompts(project, begin, loaded, reward)
    from peft import LoraConfig

    peft_config = LoraConfig(
        task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear"
    )
    config_cls, trainer_cls = (trl.RLOOConfig, trl.RLOOTrainer) if algo == "rloo" else (trl.GRPOConfig, trl.GRPOTrainer)
    from odyssey import ui

    n_steps = steps or cfg.steps
    args = config_cls(
        output_dir=str(project.state_dir / "align" / f"{algo}-work"),
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        num_generations=group,
        max_steps=n_steps,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        beta=cfg.kl_coef,
        seed=cfg.seed,
        disable_tqdm=ui.quiet(),
        **cpu_training_args(),
    )
    data = Dataset.from_list([{"prompt": p} for p in prompts])
    t0 = time.perf_counter()
    settings = {"action": algo, "start": begin.as_dict(), **reward_info, "steps": n_steps, "num_generations": group}
    with project.store.run("align", project.spec.as_dict(), settings) as run:
        trainer = trainer_cls(
            model=loaded.model,
            reward_funcs=reward_func,
            args=args,
            train_dataset=data,
            processing_class=loaded.tokenizer,
            peft_config=peft_config,
        )
        with contextlib.redirect_stdout(sys.stderr):  # the HF Trainer prints its log dicts; keep --json clean
            trainer.train()
        history = [h for h in trainer.state.log_history if "reward" in h]
        wall = time.perf_counter() - t0
        out = save_merged(trainer.model, loaded.tokenizer, run.artifacts_dir / "model")
        cand_name = name or f"{begin.name}+{algo}"
        metrics = {"wall_s": wall, **({"train_reward": float(history[-1]["reward"])} if history else {})}
        config = {
            "prompt": begin.prompt.as_dict(),
            "align": {"method": algo, "parent": begin.name, **reward_info, "steps": n_steps, "run_id": run.id},
        }
        cand_id = project.store.upsert_candidate(cand_name, "align", str(out), config, parent_id, run.id)
        run.log_metrics(metrics, candidate_id=cand_id)
        run.set_summary({"candidate": cand_name, "metrics": metrics, "history": history})
    del trainer, loaded
    result = AlignResult(cand_name, cand_id, begin.name, algo, str(out), run.id, history, metrics, wall_s=wall)
    if evaluate:
        from odyssey.align.evaluation import detox_report, evaluate_aligned

        result.evaluation = (
            detox_report(project, cand_name, begin.name, temperature=cfg.temperature)
            if reward == "toxicity"
            else evaluate_aligned(project, cand_name, begin.name, reward_model=reward_model)
        )
        result.warnings += result.evaluation.get("warnings", [])
    return result
