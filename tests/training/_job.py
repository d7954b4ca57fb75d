"""A small deterministic training job run in subprocesses by the resume and multi-process tests.

usage: python _job.py OUT_DIR [--resume] [--hang-at STEP]   (also under torchrun)
Writes OUT_DIR/result.json with the loss history and a checksum of the final weights.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main():
    import torch

    torch.set_num_threads(1)  # bit-identical CPU matmuls between runs
    from odyssey.models import load
    from odyssey.training import TrainConfig, train

    out = Path(sys.argv[1])
    resume = "--resume" in sys.argv
    hang_at = int(sys.argv[sys.argv.index("--hang-at") + 1]) if "--hang-at" in sys.argv else None
    steps = int(os.environ.get("JOB_STEPS", "9"))
    model = load("tiny:llama").model
    if os.environ.get("JOB_LORA"):  # LoRA with dropout: the loop's FastDropout draws from the resumed RNG
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)  # LoRA's A matrices are drawn here, before train() seeds anything
        model = get_peft_model(model, LoraConfig(r=4, lora_dropout=0.3, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(1)
    data = [{"input_ids": torch.randint(5, 1000, (24,), generator=generator)} for _ in range(32)]

    def loss_fn(m, batch):
        ids = batch["input_ids"]
        return m(input_ids=ids, labels=ids).loss, {"tokens": ids.numel()}

    def on_log(entry):
        if hang_at is not None and entry["step"] == hang_at:
            print("READY", flush=True)  # the test kills this process with SIGKILL now
            time.sleep(600)

    config = TrainConfig(
        output_dir=out,
        max_steps=steps,
        batch_size=4,
        learning_rate=3e-3,
        log_every=1,
        save_every=3,
        lr_scheduler="cosine",
        warmup_steps=2,
        seed=7,
    )
    result = train(model, data, loss_fn, config, resume=resume, on_log=on_log)
    if int(os.environ.get("RANK", 0)) == 0:
        checksum = float(sum(p.detach().double().abs().sum() for p in model.parameters()))
        (out / "result.json").write_text(
            json.dumps(
                {
                    "losses": [h["loss"] for h in result.history if "loss" in h],
                    "steps": result.steps,
                    "tokens": result.tokens,
                    "checksum": checksum,
                    "resumed_from": result.resumed_from,
                }
            )
        )


if __name__ == "__main__":
    main()
