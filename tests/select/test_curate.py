"""Curation: exact and near-duplicate removal, quality rules, PII scrubbing, the report."""

from __future__ import annotations

import json
import random

import pytest

from odyssey.errors import OdysseyError
from odyssey.select.curation import curate, quality_problem, scrub_pii
from odyssey.spec import CurateSpec

BASE = [
    "The library opens at nine in the morning and closes at six in the evening, and the staff help with all questions.",
    "A good bread needs flour, water, salt and time; the dough rests for hours before it goes to the oven.",
    "Trains to the coast leave every hour from the central station, and the journey takes about two hours.",
    "The museum shows paintings from the last three centuries and a small collection of old maps of the city.",
    "Our team meets on Monday to plan the week, and we share the notes with everyone who could not attend.",
    "When it rains the park is quiet, but on sunny days families come to have lunch on the grass by the lake.",
]


def near_copy(text: str, rng: random.Random) -> str:
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = words[i].upper() + "!"  # one word changed out of ~20: still a near duplicate
    return " ".join(words)


def write_corpus(folder, docs):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "docs.jsonl", "w") as fh:
        for i, text in enumerate(docs):
            fh.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")


def test_exact_and_near_duplicates_removed(tmp_path):
    rng = random.Random(0)
    docs = BASE + [BASE[0], "  " + BASE[1].upper() + "  ", near_copy(BASE[2], rng), near_copy(BASE[3], rng)]
    write_corpus(tmp_path / "corpus", docs)
    report = curate(tmp_path / "corpus", tmp_path / "clean", CurateSpec(min_words=5))
    assert report.n_input == 10 and report.n_kept == 6
    assert report.dropped["exact_duplicate"] == 2  # whitespace and case do not hide a copy
    assert report.dropped["near_duplicate"] == 2
    assert report.duplicate_of == {"d6": "d0", "d7": "d1", "d8": "d2", "d9": "d3"}
    kept = [json.loads(line)["id"] for line in (tmp_path / "clean" / "clean.jsonl").read_text().splitlines()]
    assert kept == [f"d{i}" for i in range(6)]
    md = (tmp_path / "clean" / "report.md").read_text()
    assert "| near_duplicate | 2 |" in md


@pytest.mark.parametrize(
    "text,rule",
    [
        ("too few words here", "too_short"),
        ("# ### ## # the and of to be " + "# " * 20, "symbols"),
        ("12 34 56 78 90 11 22 33 the and", "non_alpha"),
        ("buy now\nbuy now\nbuy now\nbuy now\nthe best deal and offer", "repeated_lines"),
        ("la casa es muy bonita y grande con un jardin", "language"),
        ("the cat and the cat and the cat and the cat and the cat and the cat", "repeated_ngrams"),
    ],
)
def test_quality_rules(text, rule):
    assert quality_problem(text, CurateSpec()) == rule


def test_good_text_passes_quality():
    assert all(quality_problem(t, CurateSpec()) is None for t in BASE)


def test_pii_scrubbed():
    text, counts = scrub_pii("Write to jane.doe@example.com or call +1 415-555-0132; room 12 at 9:30.")
    assert text == "Write to <EMAIL> or call <PHONE>; room 12 at 9:30."
    assert counts == {"email": 1, "phone": 1}


def test_missing_corpus_and_bad_records(tmp_path):
    with pytest.raises(OdysseyError, match="corpus not found"):
        curate(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(OdysseyError, match="no 'text' field"):
        curate(tmp_path / "c", tmp_path / "out")


def test_cli_data_curate(tmp_path):
    from typer.testing import CliRunner

    from odyssey.cli import app

    write_corpus(tmp_path / "corpus", BASE + [BASE[0]])
    result = CliRunner().invoke(
        app,
        ["data", "curate", str(tmp_path / "corpus"), "--out", str(tmp_path / "clean"), "-p", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["n_kept"] == 6 and payload["dropped"]["exact_duplicate"] == 1


def test_speaker_tags_are_not_symbols():
    dialogue = "#Person1#: Where are you going with the bags?\n#Person2#: To the station, and then home to my family."
    assert quality_problem(dialogue, CurateSpec()) is None
    hashtags = "#sale #deal #buy the best and the cheapest offer #now #win #free"
    assert quality_problem(hashtags, CurateSpec()) == "symbols"
