"""Unpaired answers for KTO: ``{prompt, completion, desirable, source}``, one judgement per answer.

KTO needs no pairs: a thumbs up or down on one answer is enough. Sources (``align.kto.data``):

- ``pairs``: each preference pair split in two, the chosen answer desirable, the rejected one not;
- ``feedback``: what people gave in ``odyssey serve`` (read through the store): thumbs and ratings on
  one answer each, corrections (the correction desirable, the corrected output not) and choices on
  the compare page (the chosen answer desirable, the other not);
- ``both``.
"""

from __future__ import annotations

from odyssey.errors import OdysseyError


def _judged(prompt, completion, desirable: bool, source: str) -> dict:
    return {"prompt": prompt, "completion": completion, "desirable": desirable, "source": source}


def _rating_is_good(f: dict) -> bool:
    if f["kind"] == "thumbs":
        return (f.get("thumbs") or 0) > 0
    rating = f.get("rating") or 0  # 0-1 or 1-5 scales, as in align.preferences.from_feedback
    return rating >= (4 if rating > 1 else 0.5)


def feedback_examples(store) -> list[dict]:
    """Every judged answer `odyssey serve` captured, in the order it was given."""
    from odyssey.store.align import feedback_rows

    out = []
    for f in feedback_rows(store):
        prompt = f.get("prompt")
        if prompt is None:
            continue
        kind = f["kind"]
        if kind in {"thumbs", "rating"} and f.get("output"):
            out.append(_judged(prompt, f["output"], _rating_is_good(f), f"feedback:{kind}"))
        elif kind == "correction" and f.get("correction") and f.get("output"):
            if f["correction"].strip() != f["output"].strip():
                out.append(_judged(prompt, f["correction"], True, "feedback:correction"))
                out.append(_judged(prompt, f["output"], False, "feedback:correction"))
        elif kind == "preference" and f.get("chosen") and f.get("rejected"):
            out.append(_judged(prompt, f["chosen"], True, "feedback:compare"))
            out.append(_judged(prompt, f["rejected"], False, "feedback:compare"))
    return out


def from_pairs(pairs: list[dict]) -> list[dict]:
    """The pairs split in two (TRL's ``unpair_preference_dataset`` order: every chosen, then every rejected)."""
    from odyssey.training.preference import unpair

    return [{**e, "source": "pairs"} for e in unpair(pairs)]


def check_balance(examples: list[dict], where: str) -> None:
    """KTO's loss has a desirable and an undesirable side: a set with one side only cannot train both."""
    good = sum(1 for e in examples if e["desirable"])
    if not examples or good == 0 or good == len(examples):
        raise OdysseyError(
            f"{where}: {good} desirable and {len(examples) - good} undesirable answers; KTO needs some of each",
            hint="collect thumbs up and down in `odyssey serve`, or set align.kto.data: pairs (preference pairs "
            "split into a desirable and an undesirable answer)",
        )
