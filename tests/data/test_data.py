import json

import pytest

from odyssey.data import example_data_dir, load_task_data, read_records
from odyssey.errors import OdysseyError, Unavailable
from odyssey.spec import Scope
from tests.conftest import SHARED_DATA, needs_shared_data


def scope(source, **fields):
    return Scope.model_validate(
        {
            "task": "summarization",
            "data": {"source": source, "fields": fields or {"input": "dialogue", "target": "summary"}},
        }
    )


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
    other = Scope.model_validate(
        {
            "task": "summarization",
            "data": {"source": "a.jsonl", "seed": 1, "fields": {"input": "dialogue", "target": "summary"}},
        }
    )
    assert load_task_data(other, tmp_path).fingerprint != one.fingerprint


def test_several_references_like_dialogsum_test(tmp_path):
    row = {"dialogue": "d", "summary1": "a", "summary2": "b", "summary3": ""}
    (tmp_path / "t.jsonl").write_text(json.dumps(row))
    s = Scope.model_validate(
        {
            "task": "summarization",
            "data": {
                "source": {"test": "t.jsonl"},
                "fields": {"input": "dialogue", "target": ["summary1", "summary2", "summary3"]},
            },
        }
    )
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
    s = Scope.model_validate(
        {
            "task": "summarization",
            "data": {
                "source": {"validation": str(SHARED_DATA / "dialogsum" / "dialogsum.dev.jsonl")},
                "fields": {"input": "dialogue", "target": "summary", "id": "fname"},
            },
        }
    )
    rows = load_task_data(s, SHARED_DATA).split("validation")
    assert len(rows) == 500 and rows[0].id.startswith("dev_")


# ---- CSV rows, encodings, empty files (issue 25 point 2, issue 26) ---------------------------------------

from odyssey.data import DataError  # noqa: E402


def _csv_scope(source, **data):
    return Scope.model_validate(
        {
            "task": "classification",
            "labels": ["ham", "spam"],
            "data": {"source": source, "fields": {"input": "text", "target": "label"}, **data},
        }
    )


def test_csv_rows_with_the_wrong_number_of_fields_are_refused_with_their_lines(tmp_path):
    (tmp_path / "sms.csv").write_text("text,label\nhello there,ham\nonly one field\nwin,a,prize,spam\nok,ham\n")
    with pytest.raises(DataError) as exc:
        load_task_data(_csv_scope("sms.csv"), tmp_path)
    text = str(exc.value)
    assert "2 bad row(s), the first on line 3" in text and "header's 2 comma-separated fields" in text
    assert f"{tmp_path / 'sms.csv'}:3: 1 field(s), the header has 2" in text
    assert f"{tmp_path / 'sms.csv'}:4: 4 field(s), the header has 2" in text
    assert [line for line, _ in exc.value.bad_lines] == [3, 4] and exc.value.exit_code == 2


def test_csv_unclosed_quote_is_reported_where_it_opens(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\nfine,ham\n"never closed,spam\nmore,ham\nrows,spam\n')
    with pytest.raises(DataError) as exc:
        read_records(tmp_path / "a.csv")
    assert exc.value.bad_lines == [(3, "a quote opened in this row is never closed")]
    # A quote closed lines later swallows the rows between: reported as one row spanning those lines.
    (tmp_path / "b.csv").write_text('text,label\n"opens here,ham\nx,spam\ncloses" late,ham\nok,spam\n')
    with pytest.raises(DataError) as exc:
        read_records(tmp_path / "b.csv")
    line, what = exc.value.bad_lines[0]
    assert line == 2 and "from line 2 to line 4: is a quote on line 2 not closed?" in what


def test_quoted_commas_and_line_breaks_are_fine(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hi, you",ham\n"two\nlines",spam\n\n')
    assert read_records(tmp_path / "a.csv") == [
        {"text": "hi, you", "label": "ham"},
        {"text": "two\nlines", "label": "spam"},
    ]


def test_tsv_named_csv_says_it_looks_tab_separated_and_tsv_reads(tmp_path):
    (tmp_path / "a.csv").write_text("text\tlabel\nhello\tham\n")
    with pytest.raises(DataError, match="looks tab-separated") as exc:
        read_records(tmp_path / "a.csv")
    assert "scope.data.format: tsv" in exc.value.hint
    (tmp_path / "a.tsv").write_text("text\tlabel\nhello, you\tham\n")
    assert read_records(tmp_path / "a.tsv") == [{"text": "hello, you", "label": "ham"}]
    assert read_records(tmp_path / "a.csv", "tsv") == [{"text": "hello", "label": "ham"}]


def test_latin1_file_names_the_byte_offset_and_the_encoding_setting(tmp_path):
    rows = "text,label\nhello,ham\ncaf\xe9 prize,spam\n" + "".join(f"r{i},ham\n" for i in range(8))
    (tmp_path / "a.csv").write_bytes(rows.encode("latin-1"))
    with pytest.raises(DataError) as exc:
        load_task_data(_csv_scope("a.csv"), tmp_path)
    message = str(exc.value)
    offset = rows.encode("latin-1").index(b"\xe9")
    assert f"a.csv:3: not valid utf-8 text: byte 0xe9 at byte offset {offset}" in message
    assert "scope.data.encoding: latin-1" in exc.value.hint
    loaded = load_task_data(_csv_scope("a.csv", encoding="latin-1"), tmp_path)
    assert "café prize" in [e.input for split in loaded.splits.values() for e in split]


def test_unknown_encoding_is_a_spec_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown text encoding 'latin-9000'"):
        _csv_scope("a.csv", encoding="latin-9000")


def test_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    (tmp_path / "a.csv").write_bytes("text,label\nhi,ham\n".encode("utf-8-sig"))
    assert read_records(tmp_path / "a.csv") == [{"text": "hi", "label": "ham"}]


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.csv", "", "is empty"),
        ("blank.jsonl", "\n\n", "is empty"),
        ("header.csv", "text,label\n", "has a header line but no data rows"),
        ("none.json", "[]", "has no records"),
    ],
)
def test_files_without_rows_are_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        read_records(tmp_path / name)


def test_json_file_errors_are_clear(tmp_path):
    (tmp_path / "a.json").write_text('[{"text": "x"},\n {oops}]')
    with pytest.raises(DataError, match=r"a.json:2: not valid JSON"):
        read_records(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a list of objects"):
        read_records(tmp_path / "b.json")


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_ROWISH = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from(
            [
                '"',
                ",",
                "\t",
                "\n",
                "\r",
                "text",
                "label",
                "ham",
                "{",
                "}",
                "[",
                "]",
                ":",
                "\\",
                "\x00",
                "\xe9",
                "null",
                "1",
            ]
        ),
        max_size=60,
    ).map(lambda p: "".join(p).encode("utf-8")),
    st.builds(lambda head, junk: b"text,label\n" + head + junk, st.binary(max_size=30), st.binary(max_size=30)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_ROWISH, suffix=st.sampled_from(["csv", "tsv", "jsonl", "json", "parquet"]))
def test_data_loaders_on_random_bytes_load_or_raise_a_clear_error(tmp_path, content, suffix):
    path = tmp_path / f"data.{suffix}"
    path.write_bytes(content)
    try:
        data = load_task_data(_csv_scope(path.name), tmp_path)
    except OdysseyError as exc:
        assert exc.exit_code == 2 and str(exc)
        return
    assert all(isinstance(e.input, str) for split in data.splits.values() for e in split)


def test_a_sample_of_a_big_file_is_its_first_whole_rows(tmp_path):
    (tmp_path / "a.csv").write_text("text,label\n" + "".join(f'"row {i}\nspans lines",ham\n' for i in range(500)))
    rows = read_records(tmp_path / "a.csv", max_bytes=1000)  # cut inside a quoted field: not the file's fault
    assert 0 < len(rows) < 500 and rows[0] == {"text": "row 0\nspans lines", "label": "ham"}
    (tmp_path / "a.json").write_text(json.dumps([{"text": f"t{i}"} for i in range(500)]))
    assert len(read_records(tmp_path / "a.json", max_bytes=100)) == 500  # one document: read whole
