"""The augment stage as a user drives it: `odyssey rag ...`, `odyssey reason`, `odyssey augment
eval`, on a project with a tiny real model, real collections and the real store."""

import json
import shutil

import pytest

from odyssey.augment.evaluate import grounded_docs_dir
from tests.conftest import tiny_project
from tests.test_cli import odyssey


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tiny_project(tmp_path_factory.mktemp("aug") / "shop", model="tiny:llama", task="qa")
    shutil.copytree(grounded_docs_dir(), root / "docs")
    with open(root / "odyssey.yaml", "a") as fh:
        fh.write("augment:\n  collection: handbook\n  documents: docs\n  max_new_tokens: 12\n  max_steps: 2\n")
    return root


def test_help_lists_the_commands():
    out = odyssey("--help").stdout
    for command in ("rag", "reason", "augment"):
        assert command in out
    rag_help = odyssey("rag", "--help").stdout
    for command in ("ingest", "ask", "search", "list"):
        assert command in rag_help


def test_ingest_search_ask_and_reingest(project):
    from odyssey.augment import api
    from odyssey.augment.index import list_collections
    from odyssey.project import Project

    first = odyssey("rag", "ingest", "--json", cwd=project)  # the spec's augment.documents
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert len(report["added"]) == 6 and report["total_chunks"] > 6
    proj = Project.load(project)
    again = api.ingest(proj, ["docs"])
    assert again.added == [] and len(again.unchanged) == 6 and again.chunks_added == 0

    hits = api.search(proj, "How much does express delivery cost?")
    assert hits[0].source == "docs/shipping.html" and "12.50" in hits[0].text

    # Nothing relevant retrieved: the answer says so, without asking the model.
    off = odyssey("rag", "ask", "What is the boiling point of liquid nitrogen?", "--json", cwd=project)
    assert off.returncode == 0, off.stderr
    off = json.loads(off.stdout)
    assert off["answer"] == "Not in the documents." and off["refused"] and not off["relevant"]

    on = api.ask(proj, "How many days of annual leave do staff get?")
    assert on.relevant and on.sources[0]["source"] == "docs/staff-handbook.md"
    assert "[1] (docs/staff-handbook.md" in on.prompt
    assert list_collections(proj) == [
        {"name": "handbook", "files": 6, "chunks": report["total_chunks"], "embedder": "packaged:all-minilm-l6-v2"}
    ]


def test_user_mistakes_get_a_message_and_a_hint(project):
    missing = odyssey("rag", "ask", "anything", "--collection", "nope", cwd=project)
    assert missing.returncode == 2 and "no collection named 'nope'" in missing.stderr and "rag ingest" in missing.stderr
    wrong = odyssey("augment", "eval", "--technique", "rag", "--dataset", "arithmetic", cwd=project)
    assert wrong.returncode == 2 and "does not apply" in wrong.stderr
    bogus = odyssey("reason", "2+2?", "--strategy", "magic", cwd=project)
    assert bogus.returncode == 2 and "unknown strategy" in bogus.stderr
    for result in (missing, wrong, bogus):
        assert "Traceback" not in result.stderr


def test_reason_with_pal_stores_the_trace(project):
    from odyssey.project import Project
    from odyssey.store.augment import latest_traces

    out = odyssey("reason", "A box has 3 rows of 4 eggs. How many eggs?", "--strategy", "pal", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    program = result["trace"][0]
    assert result["strategy"] == "pal" and "program" in program and "audit_hook" in program["protections"]
    # a tiny random model writes no working program: the failure is reported and CoT answers instead
    if not program["ok"] or program["value"] is None:
        assert result["trace"][-1].get("fallback") == "cot"
    stored = latest_traces(Project.load(project).store, 1)[0]
    assert stored["technique"] == "pal" and stored["trace"]["steps"][0]["program"] == program["program"]


def test_augment_eval_records_candidates_the_board_shows(project):
    from odyssey.augment import evaluate_augmented
    from odyssey.project import Project
    from odyssey.store.augment import traces

    react = odyssey("augment", "eval", "-t", "react", "--dataset", "arithmetic", "--limit", "2", "--json", cwd=project)
    assert react.returncode == 0, react.stderr
    result = json.loads(react.stdout)
    assert result["candidate"] == "tiny-llama:react@arithmetic" and result["n"] == 2
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0 and 1 <= result["metrics"]["mean_steps"] <= 2

    proj = Project.load(project)
    from odyssey.augment import ingest

    ingest(proj)  # a no-op when the collection is current
    rag = evaluate_augmented(proj, "rag", "project", limit=3)
    assert {"exact_match", "f1"} <= set(rag.metrics)

    store = proj.store
    candidate = store.candidate("tiny-llama:rag")
    assert candidate["stage"] == "augment" and candidate["config"]["augment"]["collection"] == "handbook"
    assert set(store.latest_metrics(candidate["id"], "test")) >= {"exact_match", "f1"}
    steps = traces(store, result["run_id"])
    assert len(steps) == 2 and all(t["trace"]["steps"] for t in steps)
    board = proj.status().as_dict()
    names = {c["name"]: c for c in board["candidates"]}
    assert names["tiny-llama:rag"]["split"] == "test" and "tiny-llama:react@arithmetic" in names
    assert next(s for s in board["stages"] if s["stage"] == "augment")["status"] == "succeeded"


@pytest.mark.slow  # overlaps test_augment_eval_records_candidates_the_board_shows; ~20 s
def test_grounded_qa_eval_through_the_python_api(project):
    from odyssey.augment import evaluate_augmented
    from odyssey.project import Project

    result = evaluate_augmented(Project.load(project), "rag", "grounded-qa", limit=4)
    m = result.metrics
    assert result.n == 4 and m["recall@5"] == 1.0
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["not_in_documents_rate"] <= 1
    assert {r["example_id"] for r in result.rows} == {"gqa-001", "gqa-002", "gqa-003", "gqa-u01"}


@pytest.mark.slow  # the whole demo (tests/test_demo.py) runs this step with SmolLM2 as well
def test_demo_step_records_augmented_candidates(project):
    from rich.console import Console

    from odyssey.augment.demo import demo_step
    from odyssey.project import Project

    proj = Project.load(project)
    console = Console(record=True, width=140)
    demo_step(proj, console, model="tiny:llama", quick=True)
    text = console.export_text()
    assert "8. augment" in text and "tiny-llama:rag@grounded-qa" in text and "tiny-llama:pal@arithmetic" in text
    names = {c["name"] for c in proj.store.candidates()}
    assert {"tiny-llama:plain@grounded-qa", "tiny-llama:rag@grounded-qa", "tiny-llama:pal@arithmetic"} <= names
