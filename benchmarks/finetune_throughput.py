"""LoRA fine-tuning throughput: HF Trainer + PEFT (padded) vs TRL SFTTrainer vs Odyssey, same everything.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/finetune_throughput.py [--n-train 48] [--n-val 24]

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
    budget and logits only on completion tokens.

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


def fresh_lora_model(path):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, **LORA))


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


def run_odyssey(path, items, pad_id, workdir) -> dict:
    from odyssey.training import TrainConfig, train
    from odyssey.training.sft import Collator, SFTModule, bucket_groups, sft_loss

    model = fresh_lora_model(path)
    groups = bucket_groups(items, batch_tokens=BATCH * 256, batch_size=16, seed=SEED)
    config = TrainConfig(
        output_dir=workdir / "odyssey",
        epochs=1,
        learning_rate=LR,
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
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=48)
    parser.add_argument("--n-val", type=int, default=24)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--only", default="hf,trl_padding_free,trl_padded,odyssey")
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
    runners = {
        "hf": lambda w: run_hf_trainer(path, items, pad_id, w),
        "trl_padding_free": lambda w: run_trl(path, items, pad_id, w, padding_free=True),
        "trl_padded": lambda w: run_trl(path, items, pad_id, w, padding_free=False),
        "odyssey": lambda w: run_odyssey(path, items, pad_id, w),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
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
    ok = {k: v for k, v in runs.items() if "tokens_per_s" in v}
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
    for key in ("ratio", "ratio_vs_trl"):
        if key in results:
            print(f"{key}: {results[key]:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
