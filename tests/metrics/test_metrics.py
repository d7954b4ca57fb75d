import random

import pytest
from rouge_score import rouge_scorer

from odyssey import metrics


def _random_text(rng, n):
    words = "the cat sat on a mat while dogs ran quickly home after lunch with friends".split()
    return " ".join(rng.choice(words) for _ in range(n)) + "."


def test_rouge_agrees_with_rouge_score_computed_independently():
    rng = random.Random(0)
    preds = [_random_text(rng, rng.randint(3, 20)) for _ in range(40)]
    refs = [[_random_text(rng, rng.randint(3, 20))] for _ in range(40)]
    ours = metrics.rouge(preds, refs, ("rouge1", "rouge2", "rougeL")).corpus
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    agg = {k: 0.0 for k in ours}
    for p, r in zip(preds, refs):
        s = scorer.score(r[0], p)
        for k in agg:
            agg[k] += s[k].fmeasure / len(preds)
    for k in ours:
        assert ours[k] == pytest.approx(agg[k], abs=1e-12)


def test_rouge_multi_reference_takes_the_best_reference():
    single = metrics.rouge(["a cat sat"], [["a cat sat"]]).corpus["rouge1"]
    multi = metrics.rouge(["a cat sat"], [["dogs ran home", "a cat sat"]]).corpus["rouge1"]
    worst = metrics.rouge(["a cat sat"], [["dogs ran home"]]).corpus["rouge1"]
    assert single == multi == pytest.approx(1.0) and worst == 0.0


def test_bleu_matches_sacrebleu_and_padding_is_neutral():
    import sacrebleu

    preds = ["the cat is on the mat", "there is a dog"]
    refs = [["the cat is on the mat"], ["a dog is there", "there is a dog here"]]
    ours = metrics.bleu(preds, refs).corpus["bleu"]
    direct = (
        sacrebleu.corpus_bleu(
            preds, [["the cat is on the mat", "a dog is there"], ["the cat is on the mat", "there is a dog here"]]
        ).score
        / 100
    )
    assert ours == pytest.approx(direct)
    assert 0 < ours <= 1 + 1e-9


def test_exact_match_and_f1_follow_squad():
    result = metrics.compute(
        ["exact_match", "f1"], ["The Eiffel Tower!", "blue house"], [["eiffel tower"], ["the red house"]], task="qa"
    )
    assert result.per_example[0] == {"exact_match": 1.0, "f1": 1.0}
    assert result.per_example[1]["exact_match"] == 0.0
    assert result.per_example[1]["f1"] == pytest.approx(0.5)  # 'house' of 2 pred / 2 ref tokens
    assert result.corpus["f1"] == pytest.approx(0.75)


def test_classification_accuracy_and_macro_f1():
    labels = ["billing", "shipping", "other"]
    preds = ["Billing", "Category: shipping.", "I think billing", "no idea"]
    gold = [["billing"], ["shipping"], ["shipping"], ["other"]]
    result = metrics.compute(["accuracy", "f1"], preds, gold, task="classification", labels=labels)
    assert result.corpus["accuracy"] == 0.5
    # billing: tp1 fp1 -> 2/3; shipping: tp1 fn1 -> 2/3; other: fn1 -> 0  => macro 4/9
    assert result.corpus["f1"] == pytest.approx(4 / 9)
    assert metrics.match_label("it is about shipping, not billing", labels) == "shipping"
