"""Fine-tuning throughput against the machine's ceiling: HF Trainer + PEFT (padded) vs TRL SFTTrainer vs
Odyssey LoRA and Odyssey full fine-tuning, same everything.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/finetune_throughput.py   # 400 rows, ~70 min here

The ceiling: fp32 GEMM FLOP/s measured in the same run (before and after; the lower is used). A LoRA token
costs ~4*N FLOPs (forward 2N, backward through the activations 2N), a full fine-tuning token ~6*N, with
N the model's parameter count, so ``ceiling_fraction = tokens/s * k*N / FLOP/s``.

Same model (SmolLM2-135M-Instruct), same examples (the first N rows of ../shared/data/dialogsum, rendered
by odyssey.prompts with the chat template and tokenized ONCE, so all three train on identical token ids
with the loss on the completion tokens only), same LoRA (r 16, alpha 32, dropout 0.05, attention + MLP
projections), same optimizer (AdamW, lr 3e-4, cosine, no warmup, clip 1.0), one epoch, fp32 on CPU,
in one process one after the other:

(a) ``transformers.Trainer`` + PEFT with random batches of 8 padded to their longest (the common recipe;
    padding to the longest in the batch, not to max_length, is the stronger version of it);
(b) TRL ``SFTTrainer`` with its fastest CPU settings we found: ``padding_free=True`` (no pad tokens,
    position ids) and completion-only loss, and, as a second TRL entry, padded batches; the faster one is (b);
(c) Odyssey (``odyssey.training.train`` + ``odyssey.training.sft``): length-bucketed batches under a token
    budget and logits only on completion tokens, with the settings the loop picks for the hardware
    (``odyssey.training.speed``);
(d) Odyssey full fine-tuning on the same loop (lr ``FULL_LR``: 3e-4 is a LoRA rate, too high for every weight).

``--profile`` adds torch.profiler's op shares of a LoRA and a full step. ``--only '' --ablations --merge``
re-times the ablations alone into an existing JSON.

``--ablations`` first times each of the loop's speed choices on the same fixed batches (one warm-up
step, then ``--ablation-steps``), one change at a time against the chosen settings, so each change's
effect is in the JSON (``ablations``), kept ones and reverted ones alike.

tokens/s counts the real (non-pad) tokens of the epoch, the same number for all three, over the wall time
of the training call. Each model's validation loss (mean completion-token cross-entropy on rows 400+) is
computed afterwards by the same function. Writes benchmarks/results/finetune_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "finetune_throughput.json"
LORA = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
LR, SEED, BATCH = 3e-4, 0, 8
FULL_LR = 3e-5
BATCH_TOKENS = BATCH * 256  # Odyssey's token budget per batch: the same ~2,000 tokens as 8 rows of ~256


def fresh_model(path, attn: str = "sdpa"):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(SEED)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)


def fresh_lora_model(path, attn: str = "sdpa"):
    from peft import LoraConfig, TaskType, get_peft_model

    return get_peft_model(fresh_model(path, attn), LoraConfig(task_type=TaskType.CAUSAL_LM, **LORA))


def gemm_flops(width: int = 2048, repeats: int = 8) -> float:
    """Sustained fp32 matrix-multiply FLOP/s on this machine now (all of torch's threads)."""
    import torch

    a, b = torch.randn(width, width), torch.randn(width, width)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * width**3 * repeats / (time.perf_counter() - start)


def val_loss(model, val_items, pad_id) -> float:
    from odyssey.training.sft import Collator, bucket_groups, mean_loss

    model.eval()
    groups = bucket_groups(val_items, batch_tokens=4096, batch_size=16)
    return mean_loss(model, groups, Collator(pad_id), model.device)


def run_hf_trainer(path, items, pad_id, workdir) -> dict:
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model = fresh_lora_model(path)
    ds = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in items])

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        return {
            "input_ids": torch.tensor([r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in rows]),
            "attention_mask": torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
            ),
            "labels": torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows]),
        }

    args = TrainingArguments(
        output_dir=str(workdir / "hf"),
        per_device_train_batch_size=BATCH,
        num_train_epochs=1,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        seed=SEED,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collate)
    start = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "steps": out.global_step, "train_loss": out.training_loss, "model": model}


def run_trl(path, items, pad_id, workdir, padding_free: bool) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model = fresh_lora_model(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # Pre-tokenized: the same ids as the others; completion_mask marks the completion tokens.
    ds = Dataset.from_list(
        [{"input_ids": e.input_ids, "completion_mask": [int(l != -100) for l in e.labels]} for e in items]
    )
    args = SFTConfig(
        output_dir=str(workdir / f"trl-{padding_free}"),
        per_device_train_batch_size=BATCH,
        num_train_epochs=1,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        seed=SEED,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        padding_free=padding_free,
        packing=False,
        completion_only_loss=True,
        max_length=None,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    start = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "steps": out.global_step, "train_loss": out.training_loss, "model": trainer.model}


def run_odyssey(path, items, pad_id, workdir, full: bool = False) -> dict:
    from odyssey.training import TrainConfig, train
    from odyssey.training.sft import Collator, SFTModule, bucket_groups, sft_loss

    model = fresh_model(path) if full else fresh_lora_model(path)
    groups = bucket_groups(items, batch_tokens=BATCH_TOKENS, batch_size=16, seed=SEED)
    config = TrainConfig(
        output_dir=workdir / ("odyssey-full" if full else "odyssey"),
        epochs=1,
        learning_rate=FULL_LR if full else LR,
        lr_scheduler="cosine",
        batch_size=1,
        max_grad_norm=1.0,
        seed=SEED,
        save_every=None,
        log_every=10_000,
        keep_best=False,
    )
    start = time.perf_counter()
    result = train(
        SFTModule(model),
        groups,
        sft_loss,
        config,
        collate_fn=Collator(pad_id),
        trainable_params=[p for p in model.parameters() if p.requires_grad],
    )
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "steps": result.steps,
        "train_loss": result.final_loss,
        "model": model,
        "loop_tokens": result.tokens,
        "settings": result.settings,
    }


# ---- ablations: one change at a time, on the same fixed batches ----------------------------------
# On this shared 2-core VM a step's time drifts by +-20 % from minute to minute, so each change is timed
# *interleaved* with the loop's own choice on the same model and the same batch, back to back, and the
# median of the paired ratios is reported. torch.compile cannot be switched per step: it is timed as a
# separate model on the same batches.

VARIANTS = {
    # name: (mode, change, note)
    "peft_dropout": ("lora", "fast_dropout_off", "kept FastDropout (nn.Dropout draws one MT19937 number per element)"),
    "eager_attention": ("lora", "eager", "kept SDPA (eager materializes the attention scores)"),
    "full_logits": ("lora", "full_logits", "kept completion-only logits (the LM head on every position otherwise)"),
    "for_loop_adamw": ("lora", "for_loop", "kept fused AdamW"),
    "full_for_loop_adamw": ("full", "for_loop", "kept fused AdamW"),
}


class Stepper:
    """One model and its optimizers; ``step(batch, change)`` times one training step with ``change`` applied."""

    def __init__(self, path, pad_id, mode: str, compiled: bool = False):
        import torch

        from odyssey.training import speed
        from odyssey.training.sft import Collator

        self.model = fresh_lora_model(path) if mode == "lora" else fresh_model(path)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        lr = LR if mode == "lora" else FULL_LR
        self.optimizers = {
            impl: torch.optim.AdamW(self.params, lr=lr, **speed.optimizer_kwargs(self.params, impl)[0])
            for impl in ("fused", "for-loop")
        }
        self.swapped = speed.swap_dropout(self.model)
        if compiled:
            inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            for layer in inner.model.layers:
                layer.compile(dynamic=True)
        self.collate = Collator(pad_id)

    def step(self, group, change: str | None = None) -> float:
        import torch

        from odyssey.training import speed
        from odyssey.training.sft import completion_loss

        batch = self.collate([group])
        batch.pop("num_tokens")
        if change == "fast_dropout_off":
            speed.restore(self.swapped)
        if change == "eager":
            self.model.set_attn_implementation("eager")
        start = time.perf_counter()
        if change == "full_logits":
            loss = self.model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss
        else:
            loss, _ = completion_loss(self.model, **batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        optimizer = self.optimizers["for-loop" if change == "for_loop" else "fused"]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        wall = time.perf_counter() - start
        if change == "fast_dropout_off":
            self.swapped = speed.swap_dropout(self.model)
        if change == "eager":
            self.model.set_attn_implementation("sdpa")
        return wall


def run_ablations(path, items, pad_id, n_steps: int, rounds: int = 2) -> dict:
    import statistics

    from odyssey.training.sft import bucket_groups

    groups = bucket_groups(items, batch_tokens=BATCH_TOKENS, batch_size=16, seed=SEED)
    # fixed batches spread over the length range (short rows, many; long rows, few)
    batches = [groups[round(i * (len(groups) - 1) / max(n_steps - 1, 1))] for i in range(n_steps)]
    tokens = [sum(len(e.input_ids) for e in g) for g in batches]
    out: dict = {"batches": [[len(g), max(len(e.input_ids) for e in g)] for g in batches], "rounds": rounds}
    for mode in ("lora", "full"):
        stepper = Stepper(path, pad_id, mode)
        stepper.step(batches[0])  # warm-up
        names = [n for n, v in VARIANTS.items() if v[0] == mode]
        paired = {n: [] for n in names}
        chosen = []
        for _ in range(rounds):
            for group, n_tok in zip(batches, tokens):
                base = stepper.step(group)
                chosen.append(n_tok / base)
                for name in names:
                    paired[name].append(base / stepper.step(group, VARIANTS[name][1]))
        out[f"{mode}_chosen"] = {"tokens_per_s_median": statistics.median(chosen), "tokens_per_s": chosen}
        for name in names:
            out[name] = {
                "note": VARIANTS[name][2],
                "speed_vs_chosen_median": statistics.median(paired[name]),
                "speed_vs_chosen": paired[name],
            }
            print(f"ablation {name:>20}: {statistics.median(paired[name]):.3f}x the chosen step", flush=True)
        del stepper
    out["compiled_layers"] = compiled_ablation(path, pad_id, batches, tokens, out["lora_chosen"])
    return out


PROFILE_GROUPS = (  # (group, test on an op's name): the first that matches names the op's group
    ("attention (SDPA flash kernel, forward + backward)", lambda k: "scaled_dot_product" in k),
    ("cross-entropy (log-softmax + NLL)", lambda k: "log_softmax" in k or "nll_loss" in k or "cross_entropy" in k),
    ("optimizer step (AdamW)", lambda k: "adam" in k or k.startswith("aten::_foreach")),
    ("dropout masks (FastDropout's random bits)", lambda k: k in {"aten::random_"}),
    (
        "casts and copies",
        lambda k: k in {"aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous"},
    ),
    ("matmul", lambda k: k in {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"}),
)


def _profile_group(key: str, shapes, vocab: int) -> str:
    for group, test in PROFILE_GROUPS:
        if test(key):
            if group == "matmul" and any(vocab in (s or []) for s in (shapes or [])):
                return "LM head matmul (logits of completion tokens)"
            return group if group != "matmul" else "matmul (attention + MLP projections, LoRA)"
    return "elementwise and the rest (norms, SiLU, RoPE, residuals, reductions)"


def profile_step(path, items, pad_id, mode: str = "lora", n_steps: int = 3) -> dict:
    """torch.profiler over ``n_steps`` chosen steps (after a warm-up): where the time goes, by the issue's
    groups (attention, LM head and cross-entropy, optimizer, casts, the rest) and by op. ``ops_share_of_wall``
    is the ops' self time over the steps' wall time; the remainder is Python, autograd bookkeeping,
    collation and the profiler itself."""
    from torch.profiler import ProfilerActivity, profile

    from odyssey.training.sft import bucket_groups

    groups = bucket_groups(items, batch_tokens=BATCH_TOKENS, batch_size=16, seed=SEED)
    batches = [groups[round(i * (len(groups) - 1) / max(n_steps - 1, 1))] for i in range(n_steps)]
    stepper = Stepper(path, pad_id, mode)
    vocab = stepper.model.config.vocab_size
    stepper.step(batches[0])
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        wall = sum(stepper.step(g) for g in batches)
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    by_group: dict[str, float] = {}
    by_op: dict[str, float] = {}
    for e in events:
        group = _profile_group(e.key, e.input_shapes, vocab)
        by_group[group] = by_group.get(group, 0.0) + e.self_cpu_time_total
        by_op[e.key] = by_op.get(e.key, 0.0) + e.self_cpu_time_total
    shares = {g: round(t / total, 4) for g, t in sorted(by_group.items(), key=lambda kv: -kv[1])}
    top = {k: round(t / total, 4) for k, t in sorted(by_op.items(), key=lambda kv: -kv[1])[:15]}
    print(f"profile {mode}: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()), flush=True)
    return {
        "steps": n_steps,
        "tokens": sum(len(e.input_ids) for g in batches for e in g),
        "wall_s": wall,
        "ops_share_of_wall": round(total / 1e6 / wall, 4),
        "self_cpu_share_by_group": shares,
        "self_cpu_share": top,
    }


def compiled_ablation(path, pad_id, batches, tokens, chosen) -> dict:
    """torch.compile(dynamic=True) of each decoder layer: its compile time and its steady-state step."""
    import statistics

    try:
        stepper = Stepper(path, pad_id, "lora", compiled=True)
        first = stepper.step(batches[0])
        rates = [n / stepper.step(g) for g, n in zip(batches, tokens)]
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    result = {
        "note": "reverted: torch.compile of each decoder layer (not in the loop)",
        "first_step_s": first,
        "tokens_per_s_median": statistics.median(rates),
        "speed_vs_chosen_median": statistics.median(rates) / chosen["tokens_per_s_median"],
    }
    print(f"ablation compiled_layers: {result['speed_vs_chosen_median']:.3f}x, first step {first:.0f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-val", type=int, default=100)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--only", default="hf,trl_padding_free,odyssey,odyssey_full")
    parser.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ablation-steps", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="torch.profiler of LoRA and full steps")
    parser.add_argument("--merge", action="store_true", help="update an existing --out with this run's figures")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the shared DialogSum file")
    import tempfile

    import torch
    from transformers import AutoTokenizer

    from odyssey.data import read_records, to_examples
    from odyssey.models import resolve
    from odyssey.prompts import PromptConfig
    from odyssey.spec import DataSpec
    from odyssey.training.sft import encode_example

    path = resolve(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = to_examples(
        read_records(DATA),
        DataSpec(source=str(DATA), fields={"input": "dialogue", "target": "summary", "id": "fname"}),
        str(DATA),
    )
    cfg = PromptConfig.default("summarization")
    items = [encode_example(tokenizer, cfg, ex, max_len=args.max_seq_len) for ex in rows[: args.n_train]]
    val_items = [encode_example(tokenizer, cfg, ex, max_len=args.max_seq_len) for ex in rows[400 : 400 + args.n_val]]
    tokens = sum(len(e.input_ids) for e in items)
    completion = sum(sum(1 for l in e.labels if l != -100) for e in items)
    padded = sum(BATCH * max(len(e.input_ids) for e in items[i : i + BATCH]) for i in range(0, len(items), BATCH))
    print(
        f"{len(items)} examples, {tokens} tokens ({completion} completion, {100 * completion / tokens:.1f}%); "
        f"random batches of {BATCH} padded to their longest would hold {padded} ({100 * (padded - tokens) / padded:.0f}% pad)",
        flush=True,
    )
    results: dict = {
        "model": args.model,
        "n_train": len(items),
        "n_val": len(val_items),
        "tokens": tokens,
        "completion_tokens": completion,
        "max_seq_len": args.max_seq_len,
        "lora": LORA,
        "lr": LR,
        "batch": BATCH,
        "torch_threads": torch.get_num_threads(),
        "command": "python benchmarks/finetune_throughput.py " + " ".join(sys.argv[1:]),
        "runs": {},
    }
    results["gemm_flops_before"] = gemm_flops()
    print(f"fp32 GEMM now: {results['gemm_flops_before'] / 1e9:.0f} GFLOP/s", flush=True)
    from transformers import AutoConfig

    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        meta = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    n_params = sum(p.numel() for p in meta.parameters())  # tied embeddings counted once
    results["n_params"] = n_params
    if args.ablations:
        results["ablations"] = run_ablations(path, items, pad_id, args.ablation_steps)
    if args.profile:
        results["profile"] = {mode: profile_step(path, items, pad_id, mode) for mode in ("lora", "full")}
    runners = {
        "hf": lambda w: run_hf_trainer(path, items, pad_id, w),
        "trl_padding_free": lambda w: run_trl(path, items, pad_id, w, padding_free=True),
        "trl_padded": lambda w: run_trl(path, items, pad_id, w, padding_free=False),
        "odyssey": lambda w: run_odyssey(path, items, pad_id, w),
        "odyssey_full": lambda w: run_odyssey(path, items, pad_id, w, full=True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n for n in args.only.split(",") if n]:
            try:
                out = runners[name](Path(tmp))
            except Exception as exc:  # a configuration one library rejects is reported, not fatal
                results["runs"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                print(f"{name}: failed: {exc}", flush=True)
                continue
            model = out.pop("model")
            out["val_loss"] = val_loss(model, val_items, pad_id)
            out["tokens_per_s"] = tokens / out["wall_s"]
            results["runs"][name] = out
            print(
                f"{name:>18}: {out['tokens_per_s']:7.1f} tok/s  {out['wall_s']:7.1f} s  steps {out['steps']:3d}  "
                f"val_loss {out['val_loss']:.4f}",
                flush=True,
            )
            del model
    runs = results["runs"]
    results["gemm_flops_after"] = gemm_flops()
    ceiling = min(results["gemm_flops_before"], results["gemm_flops_after"])
    results["gemm_flops"] = ceiling
    ok = {k: v for k, v in runs.items() if "tokens_per_s" in v}
    for name, run in ok.items():
        run["ceiling_fraction"] = run["tokens_per_s"] * (6 if name == "odyssey_full" else 4) * n_params / ceiling
    if "odyssey" in ok:
        results["ceiling_fraction_lora"] = ok["odyssey"]["ceiling_fraction"]
    if "odyssey_full" in ok:
        results["ceiling_fraction_full"] = ok["odyssey_full"]["ceiling_fraction"]
        results["val_loss_odyssey_full"] = ok["odyssey_full"]["val_loss"]
    if "odyssey" in ok and "hf" in ok:
        results["ratio"] = ok["odyssey"]["tokens_per_s"] / ok["hf"]["tokens_per_s"]
        results["val_loss_hf"] = ok["hf"]["val_loss"]
    trl = [k for k in ("trl_padding_free", "trl_padded") if k in ok]
    if "odyssey" in ok and trl:
        fastest = max(trl, key=lambda k: ok[k]["tokens_per_s"])
        results["trl_fastest"] = fastest
        results["ratio_vs_trl"] = ok["odyssey"]["tokens_per_s"] / ok[fastest]["tokens_per_s"]
        results["val_loss_trl"] = ok[fastest]["val_loss"]
    if "odyssey" in ok:
        results["val_loss_odyssey"] = ok["odyssey"]["val_loss"]
    goals = {"ceiling_fraction_lora": 0.6, "ceiling_fraction_full": 0.5, "ratio": 4.0, "ratio_vs_trl": 2.5}
    results["goals"] = goals
    for key, goal in goals.items():
        if key in results:
            print(f"{key}: {results[key]:.2f} (goal {goal})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.merge and Path(args.out).exists():  # e.g. --only '' --merge: new ablations, the runs kept
        previous = json.loads(Path(args.out).read_text())
        if not results["runs"]:
            fresh = {k: results[k] for k in ("ablations", "profile") if k in results}
            results = {**previous, **fresh, f"{'_'.join(fresh)}_command": results["command"]}
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
