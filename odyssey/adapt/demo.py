"""The fine-tuning step of ``odyssey demo``: a few LoRA steps on the shipped training examples through the
shared training loop, the adapter recorded as a candidate (parent: the prompt candidate) and scored on a
few test examples. A demonstration of the mechanics in about a minute on two CPU cores, not a useful model:
``odyssey finetune`` with the spec's settings trains for real."""

from __future__ import annotations

import time


def demo_step(project, console, model: str, quick: bool = False):
    from rich.rule import Rule

    from odyssey.adapt.cli import result_table
    from odyssey.adapt.finetune_stage import finetune

    console.print(Rule("adapt: odyssey finetune --method lora (instruction fine-tuning)"))
    started = time.perf_counter()
    # Small batches and short sequences keep the step short; the spec file is not changed.
    project.spec.adapt = project.spec.adapt.model_copy(
        update={"max_seq_len": 320, "batch_tokens": 1024, "save_every": None, "val_limit": 4, "eval_splits": ["test"]}
    )
    result = finetune(project, method="lora", model=model, max_steps=1 if quick else 3, limit=2 if quick else 4)
    console.print(result_table(result))
    console.print(
        f"[dim]{time.perf_counter() - started:.0f} s; the real thing: odyssey finetune "
        f"[--method full|lora|prompt_tuning] [--resume], then odyssey finetune merge[/]"
    )
