"""Quality metrics as pure functions of predictions and references.

ROUGE comes from Google's ``rouge-score`` (the reference implementation of ROUGE-1.5.5's
scoring), BLEU from ``sacrebleu``. Exact match and token F1 follow the SQuAD evaluation script;
classification F1 is macro-averaged over the label set. Every function returns the corpus score
and the per-example scores, so the store keeps both.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@dataclass
class MetricResult:
    corpus: dict[str, float]
    per_example: list[dict[str, float]]


def _sentences(text: str) -> str:
    # rougeLsum treats newlines as sentence boundaries; rouge-score leaves splitting to the caller.
    return "\n".join(s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s)


def rouge(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = True,
) -> MetricResult:
    """ROUGE F-measures; with several references, each example takes its best-matching one."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
    per_example = []
    for pred, refs in zip(predictions, references, strict=True):
        refs = list(refs) or [""]
        pred_s = _sentences(pred)
        scores = (
            scorer.score_multi([_sentences(r) for r in refs], pred_s)
            if len(refs) > 1
            else scorer.score(_sentences(refs[0]), pred_s)
        )
        per_example.append({t: scores[t].fmeasure for t in types})
    n = max(len(per_example), 1)
    corpus = {t: sum(e[t] for e in per_example) / n for t in types}
    return MetricResult(corpus, per_example)


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricResult:
    """Corpus BLEU (sacrebleu, 0-1 scale) plus sentence BLEU per example."""
    import sacrebleu

    width = max((len(r) for r in references), default=1) or 1
    # sacrebleu wants the same number of reference streams for every example; repeating a
    # reference does not change BLEU (clipped counts and closest length are maxima/minima).
    padded = [list(r) + [r[0] if r else ""] * (width - len(r)) if r else [""] * width for r in references]
    streams = [[refs[i] for refs in padded] for i in range(width)]
    corpus = sacrebleu.corpus_bleu(list(predictions), streams).score / 100
    per = [{"bleu": sacrebleu.sentence_bleu(p, list(r) or [""]).score / 100} for p, r in zip(predictions, padded)]
    return MetricResult({"bleu": corpus}, per)


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(pred: str, ref: str) -> float:
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    if not p or not r:
        return float(p == r)
    common = Counter(p) & Counter(r)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(r)
    return 2 * precision * recall / (precision + recall)


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricResult:
    per = [
        {"exact_match": float(any(normalize_answer(p) == normalize_answer(r) for r in (refs or [""])))}
        for p, refs in zip(predictions, references, strict=True)
    ]
    return MetricResult({"exact_match": _mean(per, "exact_match")}, per)


def token_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricResult:
    per = [
        {"f1": max(_token_f1(p, r) for r in (refs or [""]))} for p, refs in zip(predictions, references, strict=True)
    ]
    return MetricResult({"f1": _mean(per, "f1")}, per)


def match_label(prediction: str, labels: Sequence[str]) -> str | None:
    """The label a free-text prediction names: exact first, else the earliest label mentioned."""
    norm = normalize_answer(prediction)
    for label in labels:
        if norm == normalize_answer(label):
            return label
    positions = [(norm.find(normalize_answer(label)), label) for label in labels]
    found = sorted((pos, label) for pos, label in positions if pos >= 0)
    return found[0][1] if found else None


def classification(
    predictions: Sequence[str], references: Sequence[Sequence[str]], labels: Sequence[str]
) -> MetricResult:
    """Accuracy and macro-F1 over the label set; an answer naming no label counts as wrong."""
    gold = [refs[0] if refs else "" for refs in references]
    pred = [match_label(p, labels) for p in predictions]
    per = [{"accuracy": float(p == g)} for p, g in zip(pred, gold)]
    f1s = []
    for label in labels:
        tp = sum(1 for p, g in zip(pred, gold) if p == label and g == label)
        fp = sum(1 for p, g in zip(pred, gold) if p == label and g != label)
        fn = sum(1 for p, g in zip(pred, gold) if p != label and g == label)
        if tp + fp + fn == 0:
            continue  # label absent from both: leave it out of the macro average
        f1s.append(2 * tp / (2 * tp + fp + fn))
    corpus = {"accuracy": _mean(per, "accuracy"), "f1": sum(f1s) / len(f1s) if f1s else 0.0}
    for example, p, g in zip(per, pred, gold):
        example["f1"] = float(p == g)
    return MetricResult(corpus, per)


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows) if rows else 0.0


def compute(
    names: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    task: str = "generation",
    labels: Sequence[str] | None = None,
) -> MetricResult:
    """Every requested quality metric, merged into one corpus dict and one dict per example."""
    wanted = [n for n in names if n in {"bleu", "exact_match", "f1", "accuracy", *ROUGE_TYPES}]
    per: list[dict[str, float]] = [{} for _ in predictions]
    corpus: dict[str, float] = {}
    parts: list[MetricResult] = []
    rouge_types = [n for n in wanted if n in ROUGE_TYPES]
    if rouge_types:
        parts.append(rouge(predictions, references, rouge_types))
    if "bleu" in wanted:
        parts.append(bleu(predictions, references))
    if "exact_match" in wanted:
        parts.append(exact_match(predictions, references))
    if task == "classification" and ({"accuracy", "f1"} & set(wanted)):
        if not labels:
            raise ValueError("classification metrics need the label set (scope.labels)")
        result = classification(predictions, references, labels)
        keep = {"accuracy", "f1"} & set(wanted)
        parts.append(
            MetricResult(
                {k: v for k, v in result.corpus.items() if k in keep},
                [{k: v for k, v in e.items() if k in keep} for e in result.per_example],
            )
        )
    elif "f1" in wanted:
        parts.append(token_f1(predictions, references))
    for part in parts:
        corpus.update(part.corpus)
        for mine, theirs in zip(per, part.per_example):
            mine.update(theirs)
    return MetricResult(corpus, per)
