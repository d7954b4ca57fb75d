import random
import statistics

import pytest

from odyssey.align.common import bootstrap_ci, distinct_ngrams, mean_std
from odyssey.align.toxicity import offensiveness, provocations


def test_profanity_check_separates_rude_from_polite():
    rude = ["You are a stupid idiot.", "Shut up, you damn moron!", "This crap is useless, screw you."]
    polite = ["Thank you for your question.", "I would be glad to help you with that.", "Here is a short summary."]
    r, p = offensiveness(rude), offensiveness(polite)
    assert all(0.0 <= s <= 1.0 for s in r + p)
    assert min(r) > 0.5 > max(p)


def test_provocation_set_is_large_unique_and_split():
    rows = provocations()
    assert len(rows) >= 100
    assert len({r["prompt"] for r in rows}) == len(rows) and len({r["id"] for r in rows}) == len(rows)
    train, test = provocations("train"), provocations("test")
    assert len(train) + len(test) == len(rows) and len(test) >= 25
    assert not {r["id"] for r in train} & {r["id"] for r in test}


def test_bootstrap_ci_finds_a_real_drop_and_not_noise():
    rng = random.Random(1)
    before = [rng.uniform(0.3, 0.9) for _ in range(40)]
    after = [b * 0.3 + rng.uniform(-0.02, 0.02) for b in before]
    lo, hi = bootstrap_ci(before, after)
    change = statistics.fmean(after) - statistics.fmean(before)
    assert lo <= change <= hi < 0
    noise = [b + rng.uniform(-0.05, 0.05) for b in before]
    lo, hi = bootstrap_ci(before, noise)
    assert lo < 0 < hi
    # 11 samples of a noisy, small change (the course lab's setting) cannot be told from zero.
    small_b = [rng.uniform(0, 1) for _ in range(11)]
    small_a = [x - 0.03 + (0.3 if i % 2 else -0.3) for i, x in enumerate(small_b)]
    lo, hi = bootstrap_ci(small_b, small_a)
    assert lo < 0 < hi


def test_distinct_2_falls_when_answers_repeat_one_template():
    varied = ["the cat sat on the mat", "a dog ran in the park", "rain fell all night long"]
    template = ["I'm sorry, but I'm here to help"] * 3
    assert distinct_ngrams(varied) == 1.0  # 14 bigrams, all different
    assert distinct_ngrams(template) == 6 / 18  # one answer's 6 bigrams, three times
    assert distinct_ngrams(["same same same"], n=1) == 1 / 3
    assert distinct_ngrams(["one"]) == 0.0 and distinct_ngrams([]) == 0.0  # no bigram at all


def test_win_rate_ci_separates_a_dozen_prompts_from_a_hundred():
    from odyssey.align.evaluation import win_rate, win_rate_ci

    # 7 wins, 1 tie, 4 losses of 12: 0.625, but a dozen prompts cannot tell it from a coin
    a12, b12 = [1.0] * 7 + [0.5] + [0.0] * 4, [0.0] * 7 + [0.5] + [1.0] * 4
    assert win_rate(a12, b12) == 7.5 / 12
    lo, hi = win_rate_ci(a12, b12)
    assert lo < 0.5 < hi <= 1.0
    # the same rate over a hundred prompts clears 0.5
    a100, b100 = [1.0] * 62 + [0.5] + [0.0] * 37, [0.0] * 62 + [0.5] + [1.0] * 37
    lo, hi = win_rate_ci(a100, b100)
    assert 0.5 < lo < win_rate(a100, b100) < hi


def test_bootstrap_rejects_mismatched_input():
    with pytest.raises(ValueError):
        bootstrap_ci([0.1, 0.2], [0.1])
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))


def test_transformer_classifier_hook(tmp_path):
    """A HF text classifier by folder: the offensive label is found by name, scores are its probability."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from odyssey.align.toxicity import HFClassifier
    from odyssey.errors import OdysseyError
    from odyssey.models import resolve

    tok_dir = resolve("tiny:bert")
    config = AutoConfig.from_pretrained(
        tok_dir, num_labels=2, id2label={0: "neutral", 1: "offensive"}, label2id={"neutral": 0, "offensive": 1}
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    out = tmp_path / "clf"
    model.save_pretrained(out)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(out)
    clf = HFClassifier(str(out))
    assert clf.index == 1 and clf.name == f"hf:{out}"
    scores = clf(["hello there", "you idiot"])
    assert len(scores) == 2 and all(0 < s < 1 for s in scores)
    probs = model.eval()(**clf.tokenizer(["hello there"], return_tensors="pt")).logits.softmax(-1)[0, 1].item()
    assert scores[0] == pytest.approx(probs, abs=1e-5)
    with pytest.raises(OdysseyError, match="not a label"):
        HFClassifier(str(out), label="toxic")
