"""The select stage's step in ``odyssey demo``: will the model fine-tune here (planner), a corpus curated
for pretraining, and a tiny model pretrained on it, recorded as a candidate."""

from __future__ import annotations


def demo_step(project, console, model: str, quick: bool = False) -> None:
    from rich.rule import Rule
    from rich.table import Table

    from odyssey.select.corpus_gen import corpus_dir
    from odyssey.select.curation import curate
    from odyssey.select.planner import plan
    from odyssey.select.pretraining import pretrain

    console.print(Rule("select: odyssey plan, odyssey data curate, odyssey pretrain"))
    table = Table(title=f"odyssey plan --model {model} (this machine, batch 4 x 256 tokens)")
    for col in ("method", "total GB", "fits", "tokens/s", "hours for 1M tokens"):
        table.add_column(col)
    result = plan(model, "lora", "auto", batch=4, seq=256, tokens=1_000_000, root=project.root)
    for name, option in result.methods.items():
        table.add_row(
            name,
            f"{option['total_gb']:.2f}",
            "yes" if option["fits"] else "no",
            f"{option['tokens_per_s']:.0f}",
            f"{1e6 / max(option['tokens_per_s'], 1e-9) / 3600:.2f}",
        )
    console.print(table)
    report = curate(corpus_dir(), project.state_dir / "curated", project.spec.select.curate)
    dropped = ", ".join(f"{rule} {n}" for rule, n in report.dropped.items() if n)
    console.print(f"curated the shipped corpus: {report.n_kept} of {report.n_input} documents kept ({dropped})")
    steps = 20 if quick else 80
    result = pretrain(
        project,
        objective="clm",
        size="tiny",
        steps=steps,
        eval_every=max(steps // 2, 1),
        seq_len=64,
        batch_size=8,
        corpus=str(project.state_dir / "curated" / "clean.jsonl"),
    )
    table = Table(title="odyssey pretrain --objective clm --size tiny")
    for col in ("candidate", "params", "tokens", "wall s", "val loss", "val ppl", "sample"):
        table.add_column(col, overflow="fold")
    table.add_row(
        result.candidate,
        f"{result.n_params / 1e6:.2f}M",
        f"{result.tokens:,}",
        f"{result.wall_s:.0f}",
        f"{result.val_loss:.3f}",
        f"{result.val_perplexity:.1f}",
        result.sample[:60],
    )
    console.print(table)
