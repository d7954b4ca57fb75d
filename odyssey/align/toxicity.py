"""Harmlessness: an offensiveness score in [0, 1] per text, from a classifier that works offline.

The default is ``alt-profanity-check`` (a linear SVM over word n-grams, calibrated probabilities,
shipped as a wheel: no download, microseconds per text). It catches rude and profane wording,
not subtle harm; for that, name a transformer classifier (e.g. a hate-speech model by hub id or
folder) under ``align.toxicity.classifier`` and its offensive label is used instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from odyssey.errors import OdysseyError, require

OFFENSIVE_WORDS = ("toxic", "offensive", "hate", "abusive", "insult", "obscene", "profan", "label_1")


class Scorer:
    name: str

    def __call__(self, texts: list[str]) -> list[float]:  # pragma: no cover - protocol
        raise NotImplementedError


class ProfanityCheck(Scorer):
    name = "profanity-check"

    def __init__(self):
        self._predict = require("profanity_check", "align", "the offensiveness score").predict_prob

    def __call__(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self._predict([t or "" for t in texts])]


class HFClassifier(Scorer):
    """A transformers text-classification model; the score is the probability of its offensive label."""

    def __init__(self, ref: str, label: str | None = None, root: Path | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from odyssey.models import resolve

        path = resolve(ref, root)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
        labels = {i: str(n) for i, n in self.model.config.id2label.items()}
        if label is not None:
            matches = [i for i, n in labels.items() if n.lower() == label.lower()]
            if not matches:
                raise OdysseyError(
                    f"align.toxicity.label {label!r} is not a label of {ref}",
                    hint=f"its labels: {', '.join(labels.values())}",
                )
            self.index = matches[0]
        else:
            matches = [i for i, n in labels.items() if any(w in n.lower() for w in OFFENSIVE_WORDS)]
            if not matches:
                raise OdysseyError(
                    f"cannot tell which label of {ref} means offensive ({', '.join(labels.values())})",
                    hint="set align.toxicity.label",
                )
            self.index = matches[0]
        self.name = f"hf:{ref}"

    def __call__(self, texts: list[str]) -> list[float]:
        import torch

        out = []
        for i in range(0, len(texts), 16):
            enc = self.tokenizer(texts[i : i + 16], return_tensors="pt", padding=True, truncation=True, max_length=512)
            with torch.inference_mode():
                probs = self.model(**enc).logits.float().softmax(-1)[:, self.index]
            out += [float(p) for p in probs]
        return out


@lru_cache(maxsize=4)
def _cached(classifier: str, label: str | None, root: str | None) -> Scorer:
    if classifier in {"profanity-check", "alt-profanity-check", "default"}:
        return ProfanityCheck()
    return HFClassifier(classifier, label, Path(root) if root else None)


def scorer(classifier: str = "profanity-check", label: str | None = None, root: Path | None = None) -> Scorer:
    return _cached(classifier, label, str(root) if root else None)


def offensiveness(texts: list[str], classifier: str = "profanity-check", label: str | None = None) -> list[float]:
    """Offensiveness of each text in [0, 1] (higher: ruder)."""
    return scorer(classifier, label)(texts)


def provocations(split: str | None = None) -> list[dict]:
    """The shipped prompt set that tends to provoke rude answers (written for Odyssey, Apache-2.0).
    Each row: {id, prompt, kind}; ``split`` 'train' / 'test' is a fixed, deterministic partition (every 4th is test)."""
    import json
    from importlib import resources

    path = Path(str(resources.files("odyssey.align") / "data" / "provocations.jsonl"))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if split is None:
        return rows
    if split not in {"train", "test"}:
        raise OdysseyError(f"unknown provocation split {split!r}", hint="use train or test")
    return [r for i, r in enumerate(rows) if (i % 4 == 3) == (split == "test")]
