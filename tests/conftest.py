"""Test isolation: every test session gets its own ODYSSEY_HOME (model cache) and quiet output.

Tiny random models are built once per session into that home; the packaged SmolLM2 conversion
is cached under a shared folder so slow tests do not repeat it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _odyssey_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("odyssey-home")
    # Converted packaged models are reused across test runs (conversion takes a while); tiny
    # models are keyed by their config, so a changed config never picks up a stale build.
    os.environ.setdefault("ODYSSEY_MODEL_CACHE", str(Path.home() / ".cache" / "odyssey-test-models"))
    # llama.cpp's tools (odyssey.models.llamacpp) take minutes to build: share the user's build.
    os.environ.setdefault("ODYSSEY_LLAMACPP_HOME", str(Path.home() / ".cache" / "odyssey" / "llama.cpp"))
    os.environ.setdefault("ODYSSEY_LLAMACPP_BUILD", "0")  # tests use a finished build or skip; never start one
    os.environ["ODYSSEY_HOME"] = str(home)
    # Stage tests run on the reference engine; the engine tests (tests/engines/) name theirs, and
    # a named engine (argument or --engine) wins over this variable.
    os.environ.setdefault("ODYSSEY_ENGINE", "transformers")
    os.environ["ODYSSEY_QUIET"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield home


@pytest.fixture
def project_dir(tmp_path):
    """A fresh summarization project made by `odyssey init`."""
    from odyssey.scaffold import init_project

    return init_project(tmp_path / "proj", "summarization")


# A fixed "machine" for the planner (odyssey.select.planner's probe format): the arithmetic is checked
# exactly, independent of this CPU, and no test waits for the real probe.
FIXED_PROBE = {
    "device": "cpu",
    "threads": 2,
    "matmul_flops": {"64": 1e10, "2048": 1e10},
    "matvec_bytes_per_s": 1e10,
    "runtime_gb": 0.5,
    "decode_fixed_s": 0.0,
    "decode_per_layer_s": 0.0,
    "train_fixed_s": 0.0,
    "train_per_layer_s": 0.0,
}


def write_spec(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "odyssey.yaml"
    path.write_text(text)
    return path


def tiny_project(root: Path, model: str = "tiny:llama", task: str = "summarization") -> Path:
    """A project on the shipped example data with a tiny model and small limits."""
    from odyssey.scaffold import init_project

    init_project(root, task)
    spec = (root / "odyssey.yaml").read_text()
    spec = spec.replace("packaged:smollm2-135m-instruct", model)
    spec = spec.replace("limit: 12", "limit: 4").replace("limit: 18", "limit: 5")
    (root / "odyssey.yaml").write_text(spec)
    return root


needs_shared_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data not present")


def kill_9_at_ready(command: list[str], env: dict, timeout: float = 600) -> str:
    """Run ``command`` until it prints a line starting with READY, then SIGKILL it: no clean-up handlers
    run, as after a crash or an OOM kill. Returns that line; a child that ends first fails the test with
    the tail of its stderr (kept in a file, so a chatty child cannot block on a full pipe)."""
    import signal
    import subprocess
    import tempfile
    import time

    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        deadline, line = time.monotonic() + timeout, ""
        try:
            for line in proc.stdout:
                if line.startswith("READY") or time.monotonic() > deadline:
                    break
            if line.startswith("READY"):
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None and not line.startswith("READY"):
                proc.kill()
            proc.wait(timeout=60)
        errors.seek(0)
        tail = errors.read().decode(errors="replace")[-3000:]
    assert line.startswith("READY"), f"{command[1:3]} ended without READY:\n{tail}"
    assert proc.returncode == -signal.SIGKILL
    return line
