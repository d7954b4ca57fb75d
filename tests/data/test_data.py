import json

import pytest

from odyssey.data import Example, example_data_dir, load_task_data, read_records
from odyssey.errors import OdysseyError, Unavailable
from odyssey.spec import Scope
from tests.conftest import SHARED_DATA, needs_shared_data


def scope(source, **fields):
    return Scope.model_validate({"task": "summarization", "data": {"source": source, "fields": fields or
                                                                   {"input": "dialogue", "target": "summary"}}})


def test_formats_agree(tmp_path):
    rows = [{"dialogue": f"d{i}", "summary": f"s{i}"} for i in range(20)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "a.csv").write_text("dialogue,summary\n" + "\n".join(f"d{i},s{i}" for i in range(20)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    loaded = [load_task_data(scope(f"a.{ext}"), tmp_path) for ext in ("jsonl", "csv", "parquet")]
    assert loaded[0].splits == loaded[1].splits == loaded[2].splits
    assert loaded[0].fingerprint == loaded[2].fingerprint
    sizes = {k: len(v) for k, v in loaded[0].splits.items()}
    assert sizes == {"train": 12, "validation": 4, "test": 4}


def test_splits_deterministic_and_disjoint(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"dialogue": f"d{i}", "summary": "s"}) for i in range(50)))
    one, two = load_task_data(scope("a.jsonl"), tmp_path), load_task_data(scope("a.jsonl"), tmp_path)
    assert one.splits == two.splits
    ids = [e.id for s in one.splits.values() for e in s]
    assert len(ids) == len(set(ids)) == 50
    other = Scope.model_validate({"task": "summarization", "data": {"source": "a.jsonl", "seed": 1,
                                  "fields": {"input": "dialogue", "target": "summary"}}})
    assert load_task_data(other, tmp_path).fingerprint != one.fingerprint


def test_several_references_like_dialogsum_test(tmp_path):
    row = {"dialogue": "d", "summary1": "a", "summary2": "b", "summary3": ""}
    (tmp_path / "t.jsonl").write_text(json.dumps(row))
    s = Scope.model_validate({"task": "summarization", "data": {"source": {"test": "t.jsonl"},
                              "fields": {"input": "dialogue", "target": ["summary1", "summary2", "summary3"]}}})
    ex = load_task_data(s, tmp_path).split("test")[0]
    assert ex.references == ("a", "b") and ex.target == "a"


def test_bad_inputs_are_clear(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"dialogue": "x", "summary": "y"}\n{oops\n')
    with pytest.raises(OdysseyError, match=r"bad.jsonl:2: not valid JSON"):
        read_records(tmp_path / "bad.jsonl")
    (tmp_path / "cols.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(OdysseyError, match=r"column 'dialogue' not found; columns are \['text'\]"):
        load_task_data(scope("cols.jsonl"), tmp_path)
    (tmp_path / "one.jsonl").write_text('{"dialogue": "x", "summary": "y"}\n')
    with pytest.raises(OdysseyError, match="split .* is empty"):
        load_task_data(scope("one.jsonl"), tmp_path).split("test")


def test_hub_dataset_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(Unavailable, match="could not load Hugging Face dataset 'knkarthick/dialogsum'"):
        load_task_data(scope("hf:knkarthick/dialogsum"), tmp_path)


def test_shipped_examples_are_enough_for_the_demo():
    rows = read_records(example_data_dir() / "summarization" / "dialogues.jsonl")
    assert len(rows) >= 60 and all(r["dialogue"].startswith("#Person1#:") and r["summary"] for r in rows)


@needs_shared_data
def test_dialogsum_loads_with_first_rows_in_order():
    s = Scope.model_validate({"task": "summarization", "data": {"source": {"validation": str(SHARED_DATA / "dialogsum" / "dialogsum.dev.jsonl")},
                              "fields": {"input": "dialogue", "target": "summary", "id": "fname"}}})
    rows = load_task_data(s, SHARED_DATA).split("validation")
    assert len(rows) == 500 and rows[0].id.startswith("dev_")
