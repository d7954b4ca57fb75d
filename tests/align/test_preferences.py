import json

import pytest

from odyssey.align.preferences import PreferenceSet, from_file, from_metric, normalize_row, pairs_hash, write_jsonl
from odyssey.data import Example
from odyssey.errors import OdysseyError
from odyssey.project import Project
from odyssey.spec import AlignSpec
from tests.conftest import tiny_project


def test_hh_style_rows_split_at_the_last_assistant_turn():
    chosen = "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for 8 minutes."
    rejected = "\n\nHuman: How do I boil an egg?\n\nAssistant: Figure it out yourself."
    pair = normalize_row({"chosen": chosen, "rejected": rejected}, "x:1", "file")
    assert pair["prompt"] == "\n\nHuman: How do I boil an egg?\n\nAssistant:"
    assert pair["chosen"] == " Put it in boiling water for 8 minutes."
    assert pair["rejected"] == " Figure it out yourself."
    assert pair["prompt"] + pair["chosen"] == chosen


def test_conversational_rows_become_text():
    row = {
        "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
    }
    pair = normalize_row(row, "x:1", "hf:demo")
    assert pair["prompt"].startswith("user: Hi")
    assert (pair["chosen"], pair["rejected"]) == ("Hello!", "Go away.")


def test_bad_records_name_the_file_and_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
        + "\n"
        + json.dumps({"prompt": "p", "chosen": "a"})
        + "\n"
    )
    with pytest.raises(OdysseyError, match=r"prefs.jsonl:2: a preference record needs 'chosen' and 'rejected'"):
        from_file(path)
    path.write_text(json.dumps({"prompt": "p", "chosen": " ", "rejected": "b"}) + "\n")
    with pytest.raises(OdysseyError, match="non-empty"):
        from_file(path)


def test_jsonl_round_trip_keeps_provenance_and_hash(tmp_path):
    pairs = [
        {"prompt": f"p{i}", "chosen": "good", "rejected": "bad", "source": "file:x", "annotator": "ann"}
        for i in range(3)
    ]
    path = write_jsonl(pairs, tmp_path / "out.jsonl")
    back = from_file(path)
    assert [(p["prompt"], p["source"], p["annotator"]) for p in back] == [(f"p{i}", "file:x", "ann") for i in range(3)]
    assert pairs_hash(back) == pairs_hash(pairs)
    back[0]["chosen"] = "changed"
    assert pairs_hash(back) != pairs_hash(pairs)


def test_held_out_split_is_by_prompt_and_deterministic():
    pairs = [{"prompt": f"p{i // 2}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(40)]
    train, test = PreferenceSet(pairs).split(0.25)
    assert train and test and len(train) + len(test) == 40
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in test}
    assert PreferenceSet(pairs).split(0.25) == (train, test)


def test_metric_pairs_choose_the_sample_closer_to_the_reference():
    ex = [
        Example("1", "dialogue", ("Tom buys a red bike for his son.",)),
        Example("2", "dialogue", ("Amy and Bob plan a trip to Paris.",)),
    ]
    samples = [
        ["Tom buys a red bike for his son today.", "The weather is nice."],
        ["Same text.", "Same text."],
    ]  # identical samples make no pair
    pairs = from_metric(["P1", "P2"], ex, samples, "rougeL", "summarization", "cand")
    assert len(pairs) == 1
    assert pairs[0]["chosen"].startswith("Tom buys") and pairs[0]["rejected"] == "The weather is nice."
    assert pairs[0]["meta"]["chosen_score"] > pairs[0]["meta"]["rejected_score"]


def test_spec_rejects_incomplete_sources():
    with pytest.raises(ValueError, match="needs path"):
        AlignSpec.model_validate({"preferences": [{"kind": "file"}]})
    with pytest.raises(ValueError, match="extra"):
        AlignSpec.model_validate({"ppo": {"stepz": 3}})


def test_file_and_feedback_sources_are_stored_with_provenance(tmp_path):
    from odyssey.align.preferences import build_preferences, load_preference_set
    from odyssey.store.align import preference_sets

    root = tiny_project(tmp_path / "p")
    (root / "prefs.jsonl").write_text(
        "".join(
            json.dumps({"prompt": f"Q{i}", "chosen": "polite answer", "rejected": "rude answer", "annotator": "alice"})
            + "\n"
            for i in range(4)
        )
    )
    project = Project.load(root)
    store = project.store
    from odyssey.store.deploy import write_batch

    write_batch(
        store,
        [],
        [{"kind": "correction", "prompt": "Qc", "output": "wrong", "correction": "right", "annotator": "bob"}],
    )
    pset = build_preferences(project, sources=[{"kind": "file", "path": "prefs.jsonl"}, {"kind": "feedback"}])
    assert pset.sources["file"] == 4
    assert all(p["annotator"] == "alice" and p["source"] == "file:prefs.jsonl" for p in pset.pairs[:4])
    if pset.sources.get("feedback"):
        fb = pset.pairs[4]
        got = (fb["chosen"], fb["rejected"], fb["source"], fb["annotator"])
        assert got == ("right", "wrong", "feedback:correction", "bob")
    again = load_preference_set(project)
    assert again.sha256 == pset.sha256 and len(again.pairs) == len(pset.pairs)
    # The same pairs twice make one set, not two.
    build_preferences(project, sources=[{"kind": "file", "path": "prefs.jsonl"}, {"kind": "feedback"}])
    assert len(preference_sets(store)) == 1


def test_no_pairs_is_a_clear_error(tmp_path):
    from odyssey.align.preferences import build_preferences

    project = Project.load(tiny_project(tmp_path / "p"))
    with pytest.raises(OdysseyError, match="preference pair"):
        build_preferences(project, sources=[{"kind": "feedback"}])


def test_outputs_source_uses_stored_train_and_validation_answers_only(tmp_path):
    from odyssey.align.preferences import from_stored_outputs

    project = Project.load(tiny_project(tmp_path / "p"))
    store = project.store
    with store.run("prompt", {}, {}) as run:
        rows = lambda split: [
            {
                "example_id": f"{split}{i}",
                "prompt": f"P-{split}-{i}",
                "prediction": f"model {i}",
                "references": [f"reference {i}"],
            }
            for i in range(3)
        ]
        store.add_outputs(run.id, rows("validation"), split="validation")
        store.add_outputs(run.id, rows("test"), split="test")
        store.add_outputs(
            run.id,
            [{"example_id": "v9", "prompt": "P-same", "prediction": "ref", "references": ["ref"]}],
            split="validation",
        )
    pairs = from_stored_outputs(store)
    assert [p["prompt"] for p in pairs] == ["P-validation-0", "P-validation-1", "P-validation-2"]
    assert all(p["chosen"].startswith("reference") and p["rejected"].startswith("model") for p in pairs)
    assert from_stored_outputs(store, limit=1) == pairs[:1]


def test_queue_for_labelling_fills_the_compare_page_queue(tmp_path):
    from odyssey.align.preferences import queue_for_labelling
    from odyssey.store.deploy import next_pair

    root = tiny_project(tmp_path / "p")
    (root / "odyssey.yaml").write_text(
        (root / "odyssey.yaml")
        .read_text()
        .replace("generation: {max_new_tokens: 60}", "generation: {max_new_tokens: 6}")
    )
    project = Project.load(root)
    n = queue_for_labelling(project, 3)
    assert 1 <= n <= 3
    pair = next_pair(project.store)
    assert pair["a_text"] != pair["b_text"] and pair["source"] == "align" and pair["status"] == "pending"


def test_unreachable_hf_dataset_is_a_clear_error(monkeypatch):
    from odyssey.align.preferences import from_hf
    from odyssey.errors import Unavailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(Unavailable, match="could not load preference dataset 'odyssey-test/no-such-prefs'") as err:
        from_hf("odyssey-test/no-such-prefs")
    assert "kind: file" in err.value.hint
