"""`odyssey export --format gguf` under kill -9 (issue 26): killed while llama.cpp's converter writes the
GGUF file, it leaves no --to folder (nothing a later step could take for a finished export) and no
converter running; the same command again writes the files an uninterrupted export writes, byte for
byte, and clears what the killed run left."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import tiny_project
from tests.engines.test_engines import needs_llama_server

REPO = Path(__file__).resolve().parents[2]


def _project(root: Path) -> Path:
    from odyssey.project import Project
    from odyssey.prompts import PromptConfig

    tiny_project(root)
    cfg = PromptConfig.default("summarization", generation={"max_new_tokens": 8}).as_dict()
    Project.load(root).store.upsert_candidate("tiny-a", "prompt", "tiny:llama", {"prompt": cfg})
    return root


def _command(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "odyssey.cli", "export", "tiny-a", "--format", "gguf", "--to", str(out)]


def _run(root: Path, out: Path) -> None:
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    proc = subprocess.run(
        [*_command(root, out), "-p", str(root)], capture_output=True, text=True, env=env, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _running_in(folder: Path) -> list[int]:
    """Processes whose command line names ``folder`` (the converter writes into it)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(folder) in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@needs_llama_server
def test_kill_9_during_gguf_conversion_then_rerun_gives_the_uninterrupted_export(tmp_path):
    root = _project(tmp_path / "proj")
    out = tmp_path / "export"
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    proc = subprocess.Popen(
        [*_command(root, out), "-p", str(root)], stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("export.partial-*/.converted.gguf.part")):
        assert proc.poll() is None, f"the export ended before the converter ran: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "the converter never started"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the export process only, as an OOM kill would
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # the half-made export never appears under its name
    (partial,) = tmp_path.glob("export.partial-*")
    deadline = time.monotonic() + 30
    while _running_in(partial):  # the converter got SIGKILL from the kernel when its parent died
        assert time.monotonic() < deadline, f"the converter outlived the killed export: {_running_in(partial)}"
        time.sleep(0.1)

    _run(root, out)
    assert not list(tmp_path.glob("export.partial-*")), "the dead run's scratch folder is left"
    whole = tmp_path / "whole"
    _run(root, whole)
    got, want = _digests(out), _digests(whole)
    assert "model-f32.gguf" in got and "Modelfile" not in got
    assert got == want
