"""Output checks: what the answers look like, beside what they score.

ROUGE rewards word overlap, so an answer that repeats the dialogue it was asked to summarize can
score as well as a real summary (SmolLM2-135M zero-shot on DialogSum: 98 of 100 answers copy the
dialogue and still get ROUGE-1 about 0.26). Every evaluation therefore checks its own outputs:

* ``copy_rate``: share of answers whose longest run of words shared with the input is more than
  ``COPY_SHARE`` of the answer (answers of at least ``COPY_MIN_WORDS`` words; a one-word label that
  appears in the input is not a copy);
* ``repeat_rate``: share of answers that repeat one 4-word phrase ``REPEAT_TIMES`` times or more;
  ``distinct_1`` / ``distinct_2``: unique n-grams over all n-grams of all answers;
* ``empty_rate`` and ``truncated_rate`` (answers that stopped at ``max_new_tokens``);
* ``length_ratio``: mean answer length over mean reference length, in words.

A check past its threshold becomes a warning with two example answers; the prompt search does not
pick a variant with a copy warning while one without it exists.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from difflib import SequenceMatcher

COPY_SHARE = 0.5
COPY_MIN_WORDS = 8
COPY_WARN_RATE = 0.5  # "mostly copy the input"
REPEAT_TIMES = 3
REPEAT_WARN_RATE = 0.3
EMPTY_WARN_RATE = 0.1
TRUNCATED_WARN_RATE = 0.5
LENGTH_WARN = (1 / 3, 3.0)

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def copied_share(answer: str, source: str) -> float:
    """Longest run of words the answer shares with the source, as a share of the answer."""
    a, s = words(answer), words(source)
    if not a or not s:
        return 0.0
    match = SequenceMatcher(None, a, s, autojunk=False).find_longest_match(0, len(a), 0, len(s))
    return match.size / len(a)


def repeats_phrase(answer: str, n: int = 4, times: int = REPEAT_TIMES) -> bool:
    w = words(answer)
    grams = Counter(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    return bool(grams) and max(grams.values()) >= times


def distinct_n(answers: list[str], n: int) -> float:
    grams = [tuple(w[i : i + n]) for a in answers for w in [words(a)] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@dataclass
class OutputChecks:
    metrics: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    flagged: dict[str, list[str]] = field(default_factory=dict)  # check -> example ids

    @property
    def copies_input(self) -> bool:
        return self.metrics.get("copy_rate", 0.0) > COPY_WARN_RATE


def _examples(rows: list[dict], ids: list[str], k: int = 2) -> str:
    by_id = {r["example_id"]: r for r in rows}
    shown = []
    for ex_id in ids[:k]:
        text = by_id[ex_id]["prediction"].replace("\n", " ")
        shown.append(f"  [{ex_id}] {text[:160]}{'…' if len(text) > 160 else ''}")
    return "\n".join(shown)


def check_outputs(rows: list[dict], inputs: list[str], finish_reasons: list[str]) -> OutputChecks:
    """rows: the harness's per-example rows (example_id, prediction, references)."""
    n = len(rows)
    if n == 0:
        return OutputChecks({})
    preds = [r["prediction"] for r in rows]
    flagged = {
        "copy": [
            r["example_id"]
            for r, src in zip(rows, inputs)
            if len(words(r["prediction"])) >= COPY_MIN_WORDS and copied_share(r["prediction"], src) > COPY_SHARE
        ],
        "repeat": [r["example_id"] for r in rows if repeats_phrase(r["prediction"])],
        "empty": [r["example_id"] for r in rows if not r["prediction"].strip()],
        "truncated": [r["example_id"] for r, f in zip(rows, finish_reasons) if f == "length"],
    }
    metrics = {f"{k}_rate": len(v) / n for k, v in flagged.items()}
    metrics["distinct_1"], metrics["distinct_2"] = distinct_n(preds, 1), distinct_n(preds, 2)
    ref_words = [len(words(r["references"][0])) for r in rows if r.get("references")]
    if ref_words and sum(ref_words):
        metrics["length_ratio"] = (sum(len(words(p)) for p in preds) / n) / (sum(ref_words) / len(ref_words))
    return OutputChecks(metrics, _warnings(metrics, flagged, rows, n), flagged)


EXAMPLES_MARK = "; for example:"


def headline(note: str) -> str:
    """A note's one-line form, for a table cell or a progress line: its first line, without the examples."""
    return note.splitlines()[0].removesuffix(EXAMPLES_MARK) if note else note


def _warnings(metrics: dict, flagged: dict, rows: list[dict], n: int) -> list[str]:
    out = []

    def warn(check: str, text: str):
        out.append(f"{text}{EXAMPLES_MARK}\n{_examples(rows, flagged[check])}")

    if metrics["copy_rate"] > COPY_WARN_RATE:
        warn(
            "copy",
            f"{len(flagged['copy'])} of {n} answers copy the input (their longest run of words shared with "
            f"the input is over {COPY_SHARE:.0%} of the answer): scores may reward repetition, not the task",
        )
    if metrics["repeat_rate"] > REPEAT_WARN_RATE:
        warn("repeat", f"{len(flagged['repeat'])} of {n} answers repeat one phrase {REPEAT_TIMES} times or more")
    if metrics["empty_rate"] > EMPTY_WARN_RATE:
        out.append(f"{len(flagged['empty'])} of {n} answers are empty")
    if metrics["truncated_rate"] > TRUNCATED_WARN_RATE:
        warn("truncated", f"{len(flagged['truncated'])} of {n} answers stopped at max_new_tokens (cut off)")
    ratio = metrics.get("length_ratio")
    if ratio is not None and not LENGTH_WARN[0] <= ratio <= LENGTH_WARN[1]:
        out.append(f"answers are {ratio:.1f}x the references' length in words")
    return out
