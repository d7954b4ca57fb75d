"""The board's stage status: the latest successful run, with a failed attempt as a note in words."""

from odyssey.errors import Unavailable
from odyssey.evaluate.board import readable_error
from odyssey.project import Project
from tests.conftest import tiny_project


def _run(store, stage, error=None):
    try:
        with store.run(stage, {}):
            if error is not None:
                raise error
    except Exception:
        pass


def test_a_failed_attempt_after_successes_is_a_note_not_the_status(tmp_path):
    project = Project.load(tiny_project(tmp_path / "p"))
    for _ in range(3):
        _run(project.store, "evaluate")
    _run(project.store, "evaluate", Unavailable("could not load model 'packaged:smollm-typo'", hint="check the name"))
    row = next(s for s in project.status().stages if s["stage"] == "evaluate")
    assert row["status"] == "succeeded"
    assert row["last_attempt"]["status"] == "failed"
    assert "failed: could not load model 'packaged:smollm-typo'" in row["detail"]
    assert "odyssey.errors" not in row["detail"] and "Unavailable" not in row["detail"]


def test_a_stage_that_never_succeeded_shows_its_failure(tmp_path):
    project = Project.load(tiny_project(tmp_path / "p"))
    _run(project.store, "prompt", KeyError("validation"))
    row = next(s for s in project.status().stages if s["stage"] == "prompt")
    assert row["status"] == "failed" and row["detail"].endswith("failed: KeyError: 'validation'")
    _run(project.store, "prompt")
    row = next(s for s in project.status().stages if s["stage"] == "prompt")
    assert row["status"] == "succeeded" and row["detail"] == "" and row["last_attempt"] is None


def test_readable_error_drops_the_class_path():
    assert readable_error("odyssey.errors.Unavailable: hub offline\nhint: x") == "hub offline"
    assert readable_error("torch.OutOfMemoryError: CUDA out of memory") == "OutOfMemoryError: CUDA out of memory"
    assert readable_error("KeyboardInterrupt") == "interrupted (Ctrl-C)"
    assert readable_error(None) == "no error was recorded"
