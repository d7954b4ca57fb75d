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
    return subprocess.run(
        [sys.executable, "-m", "odyssey.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_help_does_not_import_torch_or_transformers():
    code = (
        "import sys, odyssey.cli; print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # Every command first routes library output (the --verbose callback): that imports nothing heavy either.
    quiet = (
        "import sys, odyssey.cli; from odyssey.ui import configure_library_output; configure_library_output(False); "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'huggingface_hub', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", quiet], capture_output=True, text=True, check=True).stdout
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


def _sms_project(root: Path, csv: bytes | str, *, fields="{input: text, target: label}", model=None) -> Path:
    """A classification project on a CSV of our own: what a new user brings."""
    odyssey("init", str(root), "--task", "classification")
    spec = (root / "odyssey.yaml").read_text()
    spec = spec.replace("source: data/tickets.jsonl", "source: data/sms.csv")
    spec = spec.replace("fields: {input: text, target: label, id: id}", f"fields: {fields}")
    spec = spec.replace("labels: [billing, shipping, technical, account, refund, other]", "labels: [ham, spam]")
    if model:
        spec = spec.replace("packaged:smollm2-135m-instruct", model)
    (root / "odyssey.yaml").write_text(spec)
    data = root / "data" / "sms.csv"
    data.write_bytes(csv if isinstance(csv, bytes) else csv.encode())
    return root


GOOD_CSV = "text,label\n" + "".join(f"message {i} free prize,{'spam' if i % 3 else 'ham'}\n" for i in range(24))


@pytest.mark.parametrize(
    "case,csv,options,expected",
    [
        (
            "wrong input column",
            GOOD_CSV,
            {"fields": "{input: txt, target: label}"},
            ["odyssey.yaml:", "scope.data.fields.input: column 'txt' is not in data/sms.csv", "did you mean 'text'?"],
        ),
        ("empty file", "", {}, ["data/sms.csv scope.data.source: the file is empty"]),
        (
            "header only",
            "text,label\n",
            {},
            ["data/sms.csv scope.data.source: the file has a header line but no data rows"],
        ),
        (
            "latin-1",
            GOOD_CSV.replace("message 3 ", "caf\xe9 3 ").encode("latin-1"),
            {},
            [
                "data/sms.csv:5 scope.data.source: not valid utf-8 text: byte 0xe9 at byte offset",
                "scope.data.encoding: latin-1",
            ],
        ),
        (
            "unknown packaged model",
            GOOD_CSV,
            {"model": "packaged:smollm3"},
            ["models[0]: unknown packaged model 'smollm3'", "packaged models: smollm2-135m-instruct"],
        ),
        (
            "bad rows",
            GOOD_CSV.replace("message 2 free prize,spam", "message 2 free, prize,spam").replace(
                "message 5 free prize,spam", "message 5 free prize spam"
            ),
            {},
            [
                "data/sms.csv:4 scope.data.source: 3 field(s), the header has 2",
                "data/sms.csv:7 scope.data.source: 1 field(s)",
                "the rule: every row has the header's 2 fields",
            ],
        ),
        (
            "unclosed quote",
            GOOD_CSV.replace("message 2 free", '"message 2 free'),
            {},
            ["data/sms.csv:4 scope.data.source: a quote opened in this row is never closed"],
        ),
        ("tab-separated", GOOD_CSV.replace(",", "\t"), {}, ["data/sms.csv:1 scope.data.source: looks tab-separated"]),
        (
            "labels not in scope.labels",
            GOOD_CSV.replace("message 4 free prize,spam", "message 4 free prize,scam"),
            {},
            ["scope.labels: data/sms.csv has target labels not in scope.labels: 'scam'"],
        ),
    ],
)
def test_validate_catches_what_would_fail_later(tmp_path, case, csv, options, expected):
    root = _sms_project(tmp_path / "p", csv, **options)
    result = odyssey("validate", cwd=root)
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    for text in expected:
        assert text in result.stdout, (case, result.stdout)


def test_validate_ok_on_a_good_csv_and_with_a_declared_encoding(tmp_path):
    root = _sms_project(tmp_path / "p", GOOD_CSV)
    assert odyssey("validate", cwd=root).returncode == 0
    latin = _sms_project(tmp_path / "q", GOOD_CSV.replace("message 3 ", "caf\xe9 3 ").encode("latin-1"))
    spec = latin / "odyssey.yaml"
    spec.write_text(
        spec.read_text().replace("    source: data/sms.csv", "    source: data/sms.csv\n    encoding: latin-1")
    )
    result = odyssey("validate", cwd=latin)
    assert result.returncode == 0, result.stdout


def test_bad_data_fails_eval_the_same_way(tmp_path):
    root = _sms_project(tmp_path / "p", GOOD_CSV.replace("message 5 free prize,spam", "message 5"), model="tiny:llama")
    result = odyssey("eval", "--limit", "1", cwd=root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sms.csv:7: 1 field(s), the header has 2" in result.stderr


def test_prompt_shots_must_be_numbers(tmp_path):
    root = tiny_project(tmp_path / "p")
    result = odyssey("prompt", "--shots", "zero", cwd=root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--shots 'zero' is not a list of shot counts" in result.stderr and "e.g. --shots 0,1,3" in result.stderr


def test_random_bytes_as_spec_are_a_user_error(tmp_path):
    (tmp_path / "odyssey.yaml").write_bytes(bytes(range(256)) * 2)
    for command in ("validate", "status"):
        result = odyssey(command, cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    # Random bytes as the data file: validate names the file, eval refuses it the same way.
    root = _sms_project(tmp_path / "p", bytes(range(256)) * 4, model="tiny:llama")
    for command in ("validate", "eval"):
        result = odyssey(command, cwd=root)
        assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
        assert "sms.csv" in result.stdout + result.stderr


NOISE = ("Loading weights", "it/s]", "WARN", "Deprecation", "DEBUG", "UserWarning")


def test_library_noise_goes_to_the_log_file_unless_verbose(tmp_path):
    """Warnings, log lines and tqdm bars from libraries: in the log by default, on stderr with --verbose."""
    log = tmp_path / "odyssey.log"
    code = f"""
import logging, sys, warnings
from odyssey.ui import OdysseyWarning, configure_library_output
configure_library_output(verbose=sys.argv[1] == "1", log_file={str(log)!r})
warnings.warn("a library UserWarning")
warnings.warn("odyssey tells the user", OdysseyWarning)
logging.getLogger("bm25s").info("bm25s info line")
import transformers
from transformers.utils import logging as hf_logging
hf_logging.get_logger("transformers.modeling_utils").warning("transformers says")
from tqdm.auto import tqdm
for _ in tqdm(range(3), desc="Loading weights"):
    pass
"""
    # A fresh environment: an earlier in-process CLI test may have set the quiet switches in os.environ.
    from odyssey.ui import QUIET_LIBRARY_ENV

    env = {k: v for k, v in os.environ.items() if k not in QUIET_LIBRARY_ENV}
    quiet = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "odyssey tells the user" in quiet.stderr
    for noise in ("a library UserWarning", "bm25s info line", "transformers says", "Loading weights"):
        assert noise not in quiet.stderr
    logged = log.read_text()
    assert "a library UserWarning" in logged and "bm25s info line" in logged and "transformers says" in logged
    verbose = subprocess.run([sys.executable, "-c", code, "1"], capture_output=True, text=True, timeout=300, env=env)
    for noise in ("a library UserWarning", "bm25s info line", "transformers says", "Loading weights"):
        assert noise in verbose.stderr


def test_rag_commands_print_no_library_noise(tmp_path):
    root = tiny_project(tmp_path / "p")
    (root / "docs").mkdir()
    (root / "docs" / "refunds.md").write_text(
        "# Refunds\n\nThe refund window is 30 days from delivery.\n\n# Shipping\n\nOrders ship within two days.\n"
    )
    ingest = odyssey("rag", "ingest", "docs", "-c", "handbook", cwd=root)
    search = odyssey("rag", "search", "refund window", "-c", "handbook", cwd=root)
    for result in (ingest, search):
        assert result.returncode == 0, result.stderr
        assert not [n for n in NOISE if n in result.stdout + result.stderr], result.stderr
    assert "refund window is 30 days" in search.stdout
    assert (root / ".odyssey" / "odyssey.log").exists()  # where the libraries' lines went


@pytest.mark.parametrize(
    "args,message",
    [
        (["pretrain", "--objective", "nope"], "--objective 'nope' is not a pretraining objective"),
        (["eval", "--limit", "0"], "Invalid value for '--limit'"),
        (["select", "--limit", "0"], "Invalid value for '--limit'"),
        (["finetune", "--limit", "0"], "Invalid value for '--limit'"),
    ],
)
def test_argument_mistakes_are_usage_errors(tmp_path, args, message):
    root = tiny_project(tmp_path / "p")
    result = odyssey(*args, cwd=root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
