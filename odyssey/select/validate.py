"""Check the planner against measurement: run a job (inference, LoRA or full fine-tuning) in a fresh
process, read its peak resident memory (VmHWM) and tokens/s, and put them beside the prediction.

A fresh process per case, so one case's memory never inflates the next one's peak.
``python -m odyssey.select.validate REF METHOD BATCH SEQ`` prints the measurement as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def _hwm_gb() -> float:
    from odyssey.models.memory import peak_rss_gb

    return peak_rss_gb()


def measure_here(ref: str, method: str, batch: int, seq: int, steps: int = 3, new_tokens: int = 32) -> dict:
    """Run the job in this process and measure it (call in a fresh process: see :func:`measure`)."""
    import torch

    from odyssey.models import load
    from odyssey.select.planner import LORA_TARGETS

    torch.manual_seed(0)
    loaded = load(ref, dtype="float32")
    model = loaded.model
    vocab = (
        model.config.get_text_config().vocab_size
        if hasattr(model.config, "get_text_config")
        else model.config.vocab_size
    )
    if method == "inference":
        prompt = seq - new_tokens
        ids = torch.randint(5, vocab, (batch, prompt))
        kwargs = dict(
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
        with torch.inference_mode():
            model.generate(
                ids[:, :8],
                max_new_tokens=2,
                min_new_tokens=2,
                do_sample=False,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )  # warm-up
            start = time.perf_counter()
            model.generate(ids, **kwargs)
            wall = time.perf_counter() - start
        return {"peak_gb": _hwm_gb(), "tokens_per_s": batch * new_tokens / wall, "wall_s": wall}
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        targets = sorted(names & set(LORA_TARGETS))
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(5, vocab, (batch, seq))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    step = min(times[1:]) if len(times) > 1 else times[0]  # the first step pays one-time allocations
    return {
        "peak_gb": _hwm_gb(),
        "tokens_per_s": batch * seq / step,
        "wall_s": sum(times),
        "trainable": sum(p.numel() for p in params),
    }


def measure(ref: str, method: str, batch: int, seq: int, steps: int = 3, timeout: int = 900) -> dict:
    """Measure in a fresh Python process; returns {"peak_gb", "tokens_per_s", ...}."""
    env = {**os.environ, "ODYSSEY_QUIET": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(
        [sys.executable, "-m", "odyssey.select.validate", ref, method, str(batch), str(seq), str(steps)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(f"measuring {ref} {method} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(ref: str, method: str, batch: int, seq: int, steps: int = 3, measured_probe: dict | None = None) -> dict:
    """Predicted vs measured peak memory and tokens/s for one case, with their ratios.
    ``measured_probe`` replaces the machine probe (tests that check memory only pass a stub)."""
    from odyssey.select.planner import plan, probe

    measured_probe = measured_probe or probe()
    predicted = plan(ref, method, "auto", batch=batch, seq=seq, measured=measured_probe)
    got = measure(ref, method, batch, seq, steps)
    return {
        "model": ref,
        "method": method,
        "batch": batch,
        "seq": seq,
        "predicted_peak_gb": round(predicted.total_gb, 4),
        "measured_peak_gb": round(got["peak_gb"], 4),
        "memory_ratio": round(predicted.total_gb / got["peak_gb"], 3),
        "predicted_tokens_per_s": round(predicted.tokens_per_s, 2),
        "measured_tokens_per_s": round(got["tokens_per_s"], 2),
        "speed_ratio": round(predicted.tokens_per_s / got["tokens_per_s"], 3),
        "predicted_components_gb": predicted.memory_gb,
    }


if __name__ == "__main__":
    ref, method, batch, seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    print(json.dumps(measure_here(ref, method, batch, seq, steps)))
