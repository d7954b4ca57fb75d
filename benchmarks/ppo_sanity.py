"""Does Odyssey's hand-written PPO learn on a real model? A reward nobody can mistake: shortness.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/ppo_sanity.py [--steps 12] [--lr 1e-4]

SmolLM2-135M-Instruct (packaged), the same 8 shipped provocation prompts at every step (with a new
mix of prompts per step, which prompts are drawn hides the trend), reward = 1 - min(characters, 200) / 200,
T 0.7, KL 0.05, batch 8, 2 PPO epochs of mini-batches of 4. If PPO works, the mean reward rises and the answers get
shorter within a dozen steps. The tiny random test models cannot show this: their logits are nearly
uniform whatever the LoRA does. Results: benchmarks/results/ppo_sanity.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "ppo_sanity.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    import torch

    from odyssey.align.common import chat_prompt
    from odyssey.align.ppo import AdaptiveKL, Policy, _ppo_step
    from odyssey.align.toxicity import provocations
    from odyssey.engines.transformers import generation_kwargs
    from odyssey.models import load
    from odyssey.spec import PPOSpec

    loaded = load("packaged:smollm2-135m-instruct", dtype="float32")
    tok = loaded.tokenizer
    tok.padding_side = "left"
    cfg = PPOSpec(
        batch_size=8,
        mini_batch_size=4,
        ppo_epochs=2,
        learning_rate=args.lr,
        max_new_tokens=40,
        kl_coef=0.05,
        adaptive_kl=False,
        top_k=0,
        temperature=0.7,
    )
    policy = Policy(loaded, cfg.lora_r, cfg.lora_alpha, seed=0)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.learning_rate)
    gen = generation_kwargs(
        {"max_new_tokens": 40, "do_sample": True, "temperature": 0.7, "top_k": 0, "top_p": 1.0}, tok
    )
    prompts = [chat_prompt(tok, r["prompt"]) for r in provocations("train")]
    batch = [prompts[i * 11 % len(prompts)] for i in range(8)]

    def shortness(_prompts, texts):
        return [1 - min(len(t), 200) / 200 for t in texts]

    torch.manual_seed(0)
    history, t0 = [], time.perf_counter()
    for step in range(args.steps):
        stats = _ppo_step(
            policy,
            tok,
            batch,
            shortness,
            optimizer,
            AdaptiveKL(cfg.kl_coef, None),
            cfg,
            gen,
            set(gen["eos_token_id"]),
            add_special=False,
        )
        row = {k: round(stats[k], 4) for k in ("reward", "kl", "entropy", "length")} | {"step": step + 1}
        history.append(row)
        print(json.dumps(row), flush=True)
    first = statistics.fmean(h["reward"] for h in history[:3])
    last = statistics.fmean(h["reward"] for h in history[-3:])
    out = {
        "model": "packaged:smollm2-135m-instruct",
        "steps": args.steps,
        "learning_rate": args.lr,
        "reward_first3": first,
        "reward_last3": last,
        "reward_gain": last - first,
        "length_first3": statistics.fmean(h["length"] for h in history[:3]),
        "length_last3": statistics.fmean(h["length"] for h in history[-3:]),
        "wall_s": round(time.perf_counter() - t0, 1),
        "history": history,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"mean reward, first 3 steps {first:.3f} -> last 3 {last:.3f}; length "
        f"{out['length_first3']:.1f} -> {out['length_last3']:.1f} tokens -> {RESULTS}"
    )


if __name__ == "__main__":
    main()
