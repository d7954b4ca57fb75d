"""Retrieval-augmented answers: retrieve -> relevance check -> prompt with numbered sources ->
answer with citations, or "Not in the documents." when nothing relevant was found.

The relevance check happens before generation: when no retrieved chunk reaches
``augment.min_similarity`` (cosine, MiniLM), the model is not asked at all, so a small model
cannot invent an answer from unrelated text. When it is asked, the prompt tells it to say the
same sentence if the sources do not hold the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NOT_FOUND = "Not in the documents."
_REFUSAL = re.compile(
    r"not\s+(?:in|found in|mentioned in|contained in|provided in|included in|stated in|given in)\s+the\s+"
    r"(?:documents?|sources?|context|text)|(?:do(?:es)?\s+not|doesn't|don't)\s+(?:contain|mention|say|provide|include|specify)"
    r"|no information|cannot (?:find|answer|determine)|can't (?:find|answer)|unable to (?:find|answer)|i don't know"
    r"|i do not know",
    re.I,
)
_CITE = re.compile(r"\[(\d{1,2})\]")


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text or ""))


@dataclass
class RagAnswer:
    question: str
    answer: str
    refused: bool
    relevant: bool
    citations: list[dict] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    prompt: str = ""

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def rag_messages(question: str, hits) -> list[dict]:
    sources = "\n\n".join(f"[{n}] ({h.citation}) {h.text}" for n, h in enumerate(hits, 1))
    return [
        {
            "role": "system",
            "content": "Answer the question using only the numbered sources. Cite the source you used "
            "like [1]. If the sources do not contain the answer, reply exactly: "
            f"{NOT_FOUND}",
        },
        {"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: {question}\nAnswer in one short sentence."},
    ]


def closed_book_messages(question: str) -> list[dict]:
    """The no-retrieval baseline: the same question, the same permission to say it is not known."""
    return [
        {
            "role": "system",
            "content": f"Answer the question in one short sentence. If you do not know, reply exactly: {NOT_FOUND}",
        },
        {"role": "user", "content": question},
    ]


def retrieve(collection, questions: list[str], options) -> list[list]:
    return collection.search_many(questions, k=options.top_k, mode=options.retrieval, reranker=options.reranker)


def answer(
    model, collection, questions: list[str], options, *, hits: list[list] | None = None, max_new_tokens: int = 48
) -> list[RagAnswer]:
    """Answer each question from the collection (batched generation for those with relevant sources)."""
    from odyssey.augment.llm import render_messages

    hits = hits if hits is not None else retrieve(collection, questions, options)
    results: list[RagAnswer | None] = [None] * len(questions)
    asked, convs = [], []
    for i, (q, found) in enumerate(zip(questions, hits)):
        relevant = [h for h in found if h.similarity is not None and h.similarity >= options.min_similarity]
        if not relevant:
            results[i] = RagAnswer(q, NOT_FOUND, True, False, [], [h.as_dict() for h in found])
            continue
        asked.append((i, relevant))
        convs.append(rag_messages(q, relevant))
    outs = model.complete(convs, description="answering from documents", max_new_tokens=max_new_tokens) if convs else []
    for (i, relevant), conv, out in zip(asked, convs, outs):
        cited = sorted({int(n) for n in _CITE.findall(out) if 1 <= int(n) <= len(relevant)})
        results[i] = RagAnswer(
            questions[i],
            out.strip(),
            is_refusal(out),
            True,
            [{"n": n, **relevant[n - 1].as_dict()} for n in cited],
            [h.as_dict() for h in relevant],
            render_messages(model.loaded.tokenizer, conv),
        )
    return [r for r in results if r is not None]


def closed_book(model, questions: list[str], max_new_tokens: int = 48) -> list[RagAnswer]:
    outs = model.complete(
        [closed_book_messages(q) for q in questions],
        description="answering without documents",
        max_new_tokens=max_new_tokens,
    )
    return [RagAnswer(q, o.strip(), is_refusal(o), False) for q, o in zip(questions, outs)]
