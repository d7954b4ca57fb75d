"""The CLI as a user runs it: a real subprocess, real exit codes, no tracebacks for mistakes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_project


def odyssey(*args, cwd=None):
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "odyssey.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_help_does_not_import_torch_or_transformers():
    code = "import sys, odyssey.cli; print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    result = odyssey("--help")
    assert result.returncode == 0
    for command in ("init", "validate", "models", "prompt", "eval", "status", "demo"):
        assert command in result.stdout


def test_init_validate_and_json(tmp_path):
    assert odyssey("init", str(tmp_path / "s"), "--task", "summarization").returncode == 0
    assert (tmp_path / "s" / "data" / "dialogues.jsonl").exists()
    again = odyssey("init", str(tmp_path / "s"))
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    ok = odyssey("validate", "--json", cwd=tmp_path / "s")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True


def test_bad_spec_is_reported_without_traceback(tmp_path):
    root = tmp_path / "s"
    odyssey("init", str(root))
    spec = root / "odyssey.yaml"
    spec.write_text(spec.read_text().replace("task: summarization", "task: summarise").replace("seed: 0", "sed: 0"))
    result = odyssey("validate", cwd=root)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert "odyssey.yaml:5 scope.task" in result.stdout and "did you mean 'summarization'" in result.stdout
    assert "scope.data.sed: unknown key 'sed' — did you mean 'seed'?" in result.stdout
    # Commands that need the spec fail the same way, with exit code 2.
    status = odyssey("status", cwd=root)
    assert status.returncode == 2 and "problem(s)" in status.stderr and "Traceback" not in status.stderr


def test_unknown_model_and_usage_errors(tmp_path):
    root = tiny_project(tmp_path / "p")
    result = odyssey("eval", "--model", "packaged:nope", cwd=root)
    assert result.returncode == 2 and "unknown packaged model 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    assert odyssey("eval", "--no-such-flag", cwd=root).returncode == 2


def test_eval_and_status_json_on_tiny_model(tmp_path):
    root = tiny_project(tmp_path / "p")
    result = odyssey("eval", "--split", "validation", "--limit", "2", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["candidate"] == "tiny-llama:zero-shot" and "rougeL" in payload["metrics"]
    gated = odyssey("eval", "--split", "validation", "--limit", "2", "--check", cwd=root)
    assert gated.returncode == 3  # a random tiny model cannot reach rougeL >= 0.30
    board = json.loads(odyssey("status", "--json", cwd=root).stdout)
    assert board["candidates"][0]["name"] == "tiny-llama:zero-shot"
    models = json.loads(odyssey("models", "--json", cwd=root).stdout)["models"]  # an object, as --json promises
    assert models[0]["ref"] == "tiny:llama" and models[0]["family"] == "decoder-only"
