"""The augment step of ``odyssey demo``: ingest the shipped documents, answer grounded questions
with and without retrieval, and solve word problems with a sandboxed program (PAL). The RAG
result is recorded as a candidate, so the board lists it."""

from __future__ import annotations


def demo_step(project, console, model: str, quick: bool = False):
    from rich.rule import Rule
    from rich.table import Table

    from odyssey.augment.evaluate import evaluate_augmented, grounded_collection
    from odyssey.augment.llm import ChatModel

    console.print(Rule("8. augment: odyssey rag ingest / augment eval (RAG) / reason --strategy pal"))
    coll = grounded_collection(project)
    n_qa, n_math = (3, 2) if quick else (8, 4)
    chat = ChatModel.load(
        model, project.root, max_new_tokens=project.spec.augment.max_new_tokens, evaluate=project.spec.evaluate
    )
    # The shipped set is ordered by document; spread the demo's questions over all of them plus
    # one unanswerable question, by evaluating the first n of each technique.
    rows = []
    for technique, dataset, n in (
        ("plain", "grounded-qa", n_qa),
        ("rag", "grounded-qa", n_qa),
        ("pal", "arithmetic", n_math),
    ):
        result = evaluate_augmented(project, technique, dataset, model_obj=chat, limit=n)
        rows.append(
            (result.candidate, dataset, result.n, result.metrics.get("accuracy", 0.0), result.metrics.get("recall@5"))
        )
    table = Table(title=f"augmented pipelines ({coll.count()} chunks in {coll.name})", title_justify="left")
    for column in ("candidate", "eval set", "n", "accuracy", "recall@5"):
        table.add_column(column)
    for name, dataset, n, acc, recall in rows:
        table.add_row(name, dataset, str(n), f"{acc:.2f}", "" if recall is None else f"{recall:.2f}")
    console.print(table)
