"""schemathesis fuzzes every operation of the served OpenAPI spec: no input may cause a 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(sys.executable).with_name("schemathesis")


@pytest.mark.slow  # a few hundred generated requests, some of them generations
@pytest.mark.skipif(not CLI.exists() and not shutil.which("schemathesis"), reason="pip install schemathesis")
def test_no_server_errors_on_generated_requests(server, tmp_path):
    from odyssey.deploy.keys import create_key

    project = server.project()
    key = create_key(project.store, "fuzz", ["inference", "feedback"], rate_limit_rpm=100000,
                     max_concurrency=64).key
    project.store.close()
    cmd = [str(CLI if CLI.exists() else shutil.which("schemathesis")), "run", server.url + "/openapi.json",
           "--checks", "not_a_server_error", "-H", f"Authorization: Bearer {key}", "--max-examples", "12",
           "--request-timeout", "120", "--generation-deterministic", "--no-color"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    report = out.stdout[-4000:] + out.stderr[-2000:]
    assert out.returncode == 0, report
    assert "Server error" not in report and " generated" in report  # it ran cases, none was a 5xx
