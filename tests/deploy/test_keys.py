"""Keys: hashed at rest, shown once, scoped, revocable; the CLI around them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from odyssey.cli import app
from odyssey.errors import OdysseyError
from tests.conftest import tiny_project


@pytest.fixture
def project(tmp_path):
    from odyssey.project import Project

    return Project.load(tiny_project(tmp_path / "p"))


def test_key_is_hashed_at_rest_and_verifies(project):
    from odyssey.deploy.keys import create_key, hash_key, verify

    new = create_key(project.store, "alice", ["inference"], rate_limit_rpm=5)
    assert new.key.startswith("ody-") and len(new.key) >= 40
    db_bytes = (project.state_dir / "odyssey.db").read_bytes() + b"".join(
        p.read_bytes() for p in project.state_dir.glob("odyssey.db-wal")
    )
    assert new.key.encode() not in db_bytes and hash_key(new.key).encode() in db_bytes
    row = verify(project.store, new.key)
    assert row["name"] == "alice" and row["scopes"] == ["inference"] and row["rate_limit_rpm"] == 5
    assert verify(project.store, new.key[:-1] + ("A" if new.key[-1] != "A" else "B")) is None
    assert verify(project.store, "") is None


def test_revoke_and_errors(project):
    from odyssey.deploy.keys import create_key, list_keys, revoke, verify

    a = create_key(project.store, "a")
    create_key(project.store, "b")
    assert revoke(project.store, a.prefix) == 1
    assert verify(project.store, a.key) is None
    assert [k["name"] for k in list_keys(project.store)] == ["b"]
    assert all("key_hash" not in k for k in list_keys(project.store, include_revoked=True))
    with pytest.raises(OdysseyError, match="no active key"):
        revoke(project.store, "a")
    with pytest.raises(OdysseyError, match="unknown scope"):
        create_key(project.store, "c", ["root"])
    with pytest.raises(OdysseyError, match="not allowed"):
        create_key(project.store, "bad name; DROP TABLE api_keys")


def test_two_active_keys_cannot_share_a_name(project):
    from odyssey.deploy.keys import create_key, revoke

    create_key(project.store, "alice")
    with pytest.raises(OdysseyError, match="active key named 'alice' already exists") as err:
        create_key(project.store, "alice")
    assert "revoke" in err.value.hint
    revoke(project.store, "alice")
    assert create_key(project.store, "alice").name == "alice"  # a revoked name may be reused
    out = CliRunner().invoke(app, ["keys", "create", "--name", "alice", "-p", str(project.root)])
    assert isinstance(out.exception, OdysseyError) and out.exception.exit_code == 2
    assert "already exists" in str(out.exception)


def test_keys_cli(project):
    runner = CliRunner()
    root = str(project.root)
    out = runner.invoke(app, ["keys", "create", "--name", "ci", "--scope", "feedback", "-p", root, "--json"])
    assert out.exit_code == 0, out.output
    made = json.loads(out.stdout)
    assert made["key"].startswith("ody-") and made["scopes"] == ["feedback"]
    listed = json.loads(runner.invoke(app, ["keys", "list", "-p", root, "--json"]).stdout)
    assert [k["name"] for k in listed] == ["ci"] and "key" not in listed[0]
    assert made["key"] not in runner.invoke(app, ["keys", "list", "-p", root]).stdout
    assert json.loads(runner.invoke(app, ["keys", "revoke", "ci", "-p", root, "--json"]).stdout) == {"revoked": 1}


def test_feedback_export_cli_and_bad_format(project, tmp_path):
    from odyssey.store import deploy as sd

    sd.write_batch(
        project.store,
        [],
        [{"kind": "preference", "prompt": "p", "chosen": "c", "rejected": "r", "annotator": "ann", "source": "test"}],
    )
    runner = CliRunner()
    out = runner.invoke(
        app, ["feedback", "export", "-p", str(project.root), "--out", str(tmp_path / "x.jsonl"), "--json"]
    )
    assert json.loads(out.stdout)["rows"] == 1
    row = json.loads((tmp_path / "x.jsonl").read_text())
    assert (row["prompt"], row["chosen"], row["rejected"], row["annotator"]) == ("p", "c", "r", "ann")
    assert row["source"] == "feedback:preference/test"
    from odyssey.deploy.export import export_feedback

    with pytest.raises(OdysseyError, match="unknown export format"):
        export_feedback(project, "csv")


def test_serve_unknown_candidate_is_a_clear_error(project):
    from odyssey.deploy.serve import pick_candidates

    with pytest.raises(OdysseyError, match="no candidate named 'nope'"):
        pick_candidates(project, ["nope"])
    [zero] = pick_candidates(project, ["best"])  # nothing evaluated yet: the first model, zero-shot
    assert zero.model_ref == "tiny:llama" and zero.prompt["task"] == "summarization"
