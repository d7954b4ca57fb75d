"""The align step of ``odyssey demo``: preference pairs from answers already stored (reference chosen over
the model's validation answers: no sampling), a short DPO run on them (LoRA, a few steps) recorded as an
aligned candidate linked to its parent, and the offensiveness of the baseline's answers. Kept to about a
minute on two CPU cores; ``quick`` skips the training."""

from __future__ import annotations

import time


def demo_step(project, console, model: str, quick: bool = False):
    from rich.rule import Rule
    from rich.table import Table

    from odyssey.align.preferences import build_preferences, from_stored_outputs

    console.print(Rule("5. align: odyssey align prefs + dpo (preference pairs, direct preference optimization)"))
    started = time.perf_counter()
    stored = from_stored_outputs(project.store)
    table = Table(title="align")
    table.add_column("step")
    table.add_column("result", justify="right")
    if len(stored) < 2:
        console.print("[dim]no stored validation answers to make preference pairs from; skipping align[/]")
        return
    n = 4 if quick else 8
    pset = build_preferences(project, sources=[{"kind": "outputs", "limit": n}])
    table.add_row("preference pairs (reference > model answer)", f"{len(pset.pairs)} (sha256 {pset.sha256[:8]})")
    from odyssey.align.toxicity import offensiveness

    answers = [p["rejected"] for p in pset.pairs]
    tox = offensiveness(answers)
    table.add_row("offensiveness of the model's answers (profanity-check)", f"{sum(tox) / len(tox):.3f}")
    if not quick:
        from odyssey.align.dpo import train_dpo

        result = train_dpo(project, evaluate=False, epochs=1, batch_size=4, max_length=384, learning_rate=5e-5)
        table.add_row("DPO candidate", result.candidate)
        for key in ("train_loss", "train_reward_accuracy"):
            if key in result.metrics:
                table.add_row(f"DPO {key.removeprefix('train_')}", f"{result.metrics[key]:.3f}")
        table.add_row("parent", result.parent)
    table.add_row("time", f"{time.perf_counter() - started:.0f} s")
    console.print(table)
    console.print(
        "[dim]full loop: odyssey align prefs && odyssey align reward && odyssey align ppo && "
        "odyssey align dpo && odyssey status; detox: odyssey align ppo --reward toxicity[/]"
    )
