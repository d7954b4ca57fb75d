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


def test_the_whole_run_row_compares_with_the_zero_shot_the_best_descends_from(tmp_path):
    """Two zero-shots share the prefix test; the lineage, not the name, picks the one the best came from."""
    from odyssey.pipeline.report import _zero_shot_of
    from odyssey.project import Project
    from tests.conftest import tiny_project

    store = Project.load(tiny_project(tmp_path / "p")).store
    store.upsert_candidate("tiny:zero-shot", "evaluate", "tiny:llama")
    other = store.upsert_candidate("tiny:llama:zero-shot", "evaluate", "tiny:llama")
    lora = store.upsert_candidate("tiny:lora", "finetune", "tiny:llama", parent_id=other)
    store.upsert_candidate("tiny:lora-int8", "optimize", "tiny:llama", parent_id=lora)
    zero_shots = ["tiny:zero-shot", "tiny:llama:zero-shot"]
    assert store.lineage("tiny:lora-int8") == ["tiny:lora-int8", "tiny:lora", "tiny:llama:zero-shot"]
    assert _zero_shot_of(store, "tiny:lora-int8", zero_shots) == "tiny:llama:zero-shot"
    store.upsert_candidate("tiny:orphan", "prompt", "tiny:llama")  # no parent recorded: the name prefix decides
    assert _zero_shot_of(store, "tiny:orphan", zero_shots) == "tiny:zero-shot"
    assert store.lineage("no-such") == []
