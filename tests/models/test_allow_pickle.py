"""`allow_pickle: true` in odyssey.yaml is what lets odyssey.models.loading open pickle checkpoints."""

from __future__ import annotations


def test_allow_pickle_in_the_spec_allows_pickle_loading(tmp_path, monkeypatch):
    from odyssey.models.loading import pickle_allowed
    from odyssey.project import Project
    from tests.conftest import tiny_project

    monkeypatch.delenv("ODYSSEY_ALLOW_PICKLE", raising=False)
    root = tiny_project(tmp_path / "p")
    Project.load(root)
    assert not pickle_allowed()
    spec = root / "odyssey.yaml"
    spec.write_text(spec.read_text() + "\nallow_pickle: true\n")
    assert Project.load(root).spec.allow_pickle
    assert pickle_allowed()
