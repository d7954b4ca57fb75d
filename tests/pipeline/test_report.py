"""The gains ``odyssey run`` ends with: the mean per-example change over the parent and its paired
bootstrap 95 % interval."""

from odyssey.pipeline.report import gain


def test_a_consistent_gain_has_an_interval_above_zero():
    parent = {str(i): 0.2 + 0.01 * (i % 5) for i in range(40)}
    child = {k: v + 0.1 + 0.02 * (int(k) % 3) for k, v in parent.items()}
    found = gain(child, parent)
    assert found["n"] == 40 and abs(found["gain"] - (0.1 + 0.02 * sum(i % 3 for i in range(40)) / 40)) < 1e-9
    assert 0 < found["low"] <= found["gain"] <= found["high"]


def test_no_change_and_noise_include_zero():
    parent = {str(i): (i % 7) / 7 for i in range(30)}
    same = gain(dict(parent), parent)
    assert same["gain"] == same["low"] == same["high"] == 0.0
    noisy = {k: v + (0.05 if int(k) % 2 else -0.05) for k, v in parent.items()}
    found = gain(noisy, parent)
    assert found["low"] < 0 < found["high"]


def test_only_examples_both_were_scored_on_count():
    assert gain({"a": 1.0, "b": 0.5}, {"b": 0.0, "c": 1.0})["n"] == 1
    assert gain({"a": 1.0}, {"b": 0.0}) is None
