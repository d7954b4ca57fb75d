"""Path traversal through names (issue 26; the Ollama CVE-2024-37032 / CVE-2024-45436 kind): a
candidate, model, collection or export name, or an archive member, that tries to name a path
outside the project's stores is refused with a clear error before anything is written or deleted.
Each attack goes through the real entry point: the CLI in a subprocess, the entry function, the
llama.cpp source extraction from a tarball."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from odyssey.errors import OdysseyError
from odyssey.paths import check_name
from tests.conftest import tiny_project

BAD_NAMES = [
    "../../victim",
    "..",
    ".",
    "/etc/passwd",
    "a/../../b",
    "a\\..\\b",
    "x\x00y",
    "line\nbreak",
    ".hidden",
    "-rf",
    " padded",
    "",
    "x" * 201,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_name_refuses_every_path_like_name(name):
    with pytest.raises(OdysseyError, match="it would name a path outside") as err:
        check_name(name, "candidate name")
    assert "letters, digits" in err.value.hint


@pytest.mark.parametrize("name", ["tiny-llama:lora-2", "smollm2:react@grounded-qa", "a..b", "pretrained-clm-tiny"])
def test_check_name_keeps_the_names_odyssey_makes(name):
    assert check_name(name, "candidate name") == name


def odyssey(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    return subprocess.run(
        [sys.executable, "-m", "odyssey.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tiny_project(tmp_path_factory.mktemp("names") / "proj")


def _victim(root: Path) -> Path:
    """A folder next to the project (where ``.odyssey/pretrain/../../../victim`` points) that must survive."""
    victim = root.parent / "victim"
    victim.mkdir(exist_ok=True)
    (victim / "keep.txt").write_text("keep me")
    return victim


# pretrain replaces the folder named after its candidate on a fresh run: before the check, this deleted
# the victim folder (`shutil.rmtree(.odyssey/pretrain/<name>)`); distill and prune wrote into .odyssey.
@pytest.mark.parametrize(
    "command",
    [
        ["pretrain", "--steps", "1", "--name", "../../../victim"],
        ["pretrain", "--steps", "1", "--name", "{victim}"],  # an absolute path: Path / "/abs" is "/abs"
        ["optimize", "quantize", "--name", ".."],
        ["optimize", "quantize", "--name", "..\\..\\victim"],
    ],
)
def test_a_candidate_name_on_the_cli_cannot_reach_outside_the_project(project, command):
    victim = _victim(project)
    args = [a.replace("{victim}", str(victim)) for a in command]
    proc = odyssey(*args, "-p", str(project))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "would name a path outside" in proc.stderr and "Traceback" not in proc.stderr
    assert (victim / "keep.txt").read_text() == "keep me"
    assert not (project / ".odyssey" / "optimize").exists() and not (project / ".odyssey" / "pretrain").exists()


def _finetune(project, name):
    from odyssey.adapt import finetune

    finetune(project, name=name, max_steps=1, evaluate=False)


def _distill(project, name):
    from odyssey.optimize.distillation import distill

    distill(project, name=name, steps=1, measure=False)


def _prune(project, name):
    from odyssey.optimize.pruning import prune

    prune(project, name=name, measure=False)


# The entry functions the pipeline, `odyssey tune` and the Python API call with a name (no CLI option).
@pytest.mark.parametrize("call", [_finetune, _distill, _prune], ids=["finetune", "distill", "prune"])
@pytest.mark.parametrize("name", ["..", "../../../victim"])
def test_entry_functions_refuse_a_path_like_candidate_name_before_any_work(project, call, name):
    from odyssey.project import Project

    with pytest.raises(OdysseyError, match="would name a path outside"):
        call(Project.load(project), name)
    assert not {"adapt", "optimize"} & {p.name for p in (project / ".odyssey").iterdir()}


@pytest.mark.parametrize("name", ["../../victim", "/tmp/victim", "a/b", ".."])
def test_a_collection_name_cannot_reach_outside_the_collections(project, name):
    proc = odyssey("rag", "ingest", str(project / "missing"), "--collection", name, "-p", str(project))
    assert proc.returncode == 2 and "is not allowed" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "x\x01y"])
def test_export_of_a_path_like_candidate_is_no_such_candidate(project, tmp_path, name):
    proc = odyssey("export", name, "--format", "hf", "--to", str(tmp_path / "out"), "-p", str(project))
    assert proc.returncode == 2 and "no candidate named" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_export_force_replaces_only_an_earlier_export(project, tmp_path):
    """``--to ~ --force`` used to delete the folder whatever it held (atomic_dir replaces it)."""
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    proc = odyssey("export", "best", "--format", "hf", "--to", str(precious), "--force", "-p", str(project))
    assert proc.returncode == 2 and "--force replaces only exports" in proc.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"


# ---- archive members: the llama.cpp sources come out of llama-cpp-python's sdist tarball ------------


def _sdist(path: Path, *members: tarfile.TarInfo | tuple[str, bytes]) -> Path:
    top = "llama_cpp_python-0.0.0/vendor/llama.cpp/"
    with tarfile.open(path, "w:gz") as tar:
        for m in [(top + "CMakeLists.txt", b"project(x)"), (top + "convert_hf_to_gguf.py", b""), *members]:
            if isinstance(m, tarfile.TarInfo):
                m.name = top + m.name
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return path


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _extract(tmp_path, monkeypatch, sdist: Path) -> Path:
    from odyssey.models import llamacpp

    monkeypatch.setenv("ODYSSEY_LLAMACPP_SDIST", str(sdist))
    monkeypatch.setenv("ODYSSEY_LLAMACPP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ODYSSEY_LLAMACPP_SOURCE", raising=False)
    return llamacpp.source_dir()


@pytest.mark.parametrize(
    "member",
    [
        ("llama_cpp_python-0.0.0/vendor/llama.cpp/../../../../../escaped.txt", b"x"),  # a '..' member
        _link("up", "../../../../.."),  # a symlink out of the tree
        _link("abs", "/etc"),  # an absolute symlink
        _link("hard", "../../../../../escaped.txt", tarfile.LNKTYPE),  # a hard link out of the tree
    ],
    ids=["dotdot-member", "symlink-out", "absolute-symlink", "hardlink-out"],
)
def test_a_tarball_member_that_leaves_the_tree_is_refused(tmp_path, monkeypatch, member):
    sdist = _sdist(tmp_path / "evil.tar.gz", member)
    with pytest.raises(OdysseyError, match="outside the source folder") as err:
        _extract(tmp_path, monkeypatch, sdist)
    assert "delete it" in err.value.hint
    assert not (tmp_path / "escaped.txt").exists() and not any(tmp_path.glob("home/*/src"))
    assert not list(tmp_path.glob("home/*/src.tmp-*"))  # the scratch folder is gone too


def test_an_absolute_member_is_contained_in_the_tree(tmp_path, monkeypatch):
    target = tmp_path / "abs-escape.txt"
    sdist = _sdist(tmp_path / "abs.tar.gz", ("llama_cpp_python-0.0.0/vendor/llama.cpp/" + str(target), b"x"))
    src = _extract(tmp_path, monkeypatch, sdist)
    assert not target.exists()
    assert (src / str(target).lstrip("/")).read_bytes() == b"x"  # written inside, the leading '/' stripped
