"""llama.cpp's own command-line tools, built once from the sources that ship with llama-cpp-python.

The ``llama_cpp`` Python package is a binding to a compiled ``libllama``; it does not install
``llama-server``, ``llama-quantize`` or ``convert_hf_to_gguf.py``. Its source distribution,
though, vendors the exact llama.cpp tree it was built from (``vendor/llama.cpp``). Building the
tools from that tree keeps them at the same llama.cpp revision as the installed binding, so a GGUF
written by one is always readable by the other. No wheel on PyPI ships these binaries, which is
why this module drives CMake itself.

Layout under ``<cache>/<llama-cpp-python version>/`` (``<cache>`` is ``ODYSSEY_LLAMACPP_HOME``
or ``odyssey.paths.home()/"llama.cpp"``)::

    sdist/   the downloaded llama-cpp-python sdist (kept so a rebuild needs no network)
    src/     its vendor/llama.cpp tree (convert_hf_to_gguf.py and gguf-py live here)
    bin/     the built tools; written to bin.tmp-* and renamed, so a half build never shows

Every step is idempotent and guarded by a file lock, so two processes asking at once build once.
Where the sources come from can be overridden: ``ODYSSEY_LLAMACPP_SDIST`` (a sdist tarball) or
``ODYSSEY_LLAMACPP_SOURCE`` (an existing llama.cpp checkout). ``ODYSSEY_LLAMACPP_JOBS`` sets the
build parallelism (default: all cores). ``ODYSSEY_LLAMACPP_BUILD=0`` turns the build-on-first-use
of :func:`tool_path` off (the test suite sets it: a test must not start a minutes-long build).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from odyssey.errors import MissingDependency, OdysseyError, Unavailable
from odyssey.paths import home

# The tools Odyssey uses; built together because they share almost all object files.
TOOLS = ("llama-server", "llama-quantize")
PACKAGE = "llama-cpp-python"

# CMake flags: release build, static libraries (the binaries are then self-contained and can be
# moved into bin/), nothing that needs the network (no curl/OpenSSL, no web-UI download from the
# Hugging Face bucket, no npm build), and no tests/examples we would not use.
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
]


# GCC flags that keep a native (-march=native) build off Intel AMX. Explicit -mno-* flags win over
# -march=native whatever their order, so they can ride in CMAKE_C(XX)_FLAGS.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


@functools.lru_cache(maxsize=1)
def _host_cpuinfo() -> str:
    """/proc/cpuinfo, read once: bin_dir() asks on every tool lookup."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_advertises_amx(cpuinfo: str | None = None) -> bool:
    if cpuinfo is None:
        cpuinfo = _host_cpuinfo()
    return any(line.startswith("flags") and " amx_tile" in line for line in cpuinfo.splitlines())


def amx_cmake_flags(cpuinfo: str | None = None) -> list[str]:
    """Build without AMX when the CPU advertises it, unless ODYSSEY_LLAMACPP_AMX=1.

    Seen here: a VM whose CPU flags list amx_tile/amx_int8, where the kernel grants the tile
    permission (ARCH_REQ_XCOMP_PERM succeeds) and the first ``ldtilecfg`` in ggml's AMX matmul still
    faults: every llama.cpp program built with -march=native segfaults on its first Q4_0/Q4_1/Q8_0
    matmul. AMX only speeds up those matmuls, so a build that works everywhere is the default.
    """
    if os.environ.get("ODYSSEY_LLAMACPP_AMX") == "1" or not cpu_advertises_amx(cpuinfo):
        return []
    return [f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]


def version() -> str:
    """The installed llama-cpp-python version (the tools are built from the same llama.cpp)."""
    try:
        from importlib.metadata import PackageNotFoundError, version as dist_version

        return dist_version(PACKAGE)
    except PackageNotFoundError as exc:
        raise MissingDependency(
            "llama.cpp tools are built from the llama-cpp-python sources, but llama-cpp-python is not installed.",
            hint="pip install 'llm-odyssey[deploy]'  (or: pip install llama-cpp-python)",
        ) from exc


def root(ver: str | None = None) -> Path:
    base = os.environ.get("ODYSSEY_LLAMACPP_HOME")
    path = (Path(base) if base else home() / "llama.cpp") / (ver or version())
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(message: str) -> None:
    from odyssey.ui import say

    say(message)


# ---------------------------------------------------------------------------------------------
# Sources


def _sdist_name(ver: str) -> str:
    return f"llama_cpp_python-{ver}.tar.gz"


def sdist_path() -> Path:
    """The llama-cpp-python source tarball, downloaded with pip on first use."""
    override = os.environ.get("ODYSSEY_LLAMACPP_SDIST")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise OdysseyError(
                f"ODYSSEY_LLAMACPP_SDIST={override} is not a file.",
                hint="Point it at a llama_cpp_python-<version>.tar.gz, or unset it to download one.",
            )
        return path
    ver = version()
    target_dir = root(ver) / "sdist"
    target = target_dir / _sdist_name(ver)
    if target.is_file():
        return target
    with _locked(root(ver) / ".sdist.lock"):
        if target.is_file():
            return target
        target_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target_dir) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
                f"{PACKAGE}=={ver}",
                "-d",
                tmp,
            ]
            _say(f"Downloading the {PACKAGE} {ver} sources (llama.cpp is built from them once)...")
            from odyssey.ui import status

            with status(f"pip download {PACKAGE}=={ver} (sdist)"):
                proc = subprocess.run(cmd, capture_output=True, text=True)
            found = list(Path(tmp).glob("*.tar.gz"))
            if proc.returncode != 0 or not found:
                raise Unavailable(
                    f"Could not download the {PACKAGE} {ver} source distribution:\n"
                    + (proc.stderr or proc.stdout).strip()[-1500:],
                    hint=(
                        f"Download it yourself (pip download --no-binary :all: --no-deps {PACKAGE}=={ver}) and set "
                        "ODYSSEY_LLAMACPP_SDIST=<that .tar.gz>, or set ODYSSEY_LLAMACPP_SOURCE=<a llama.cpp checkout>."
                    ),
                )
            os.replace(found[0], target)
    return target


def source_dir() -> Path:
    """The llama.cpp source tree (extracted from the sdist's ``vendor/llama.cpp`` on first use)."""
    override = os.environ.get("ODYSSEY_LLAMACPP_SOURCE")
    if override:
        path = Path(override).expanduser()
        if not (path / "CMakeLists.txt").is_file() or not (path / "convert_hf_to_gguf.py").is_file():
            raise OdysseyError(
                f"ODYSSEY_LLAMACPP_SOURCE={override} is not a llama.cpp source tree "
                "(no CMakeLists.txt / convert_hf_to_gguf.py there).",
                hint="Point it at a llama.cpp checkout, or unset it to use llama-cpp-python's sources.",
            )
        return path
    ver = version()
    base = root(ver)
    src = base / "src"
    if (src / "CMakeLists.txt").is_file():
        return src
    tarball = sdist_path()
    with _locked(base / ".src.lock"):
        if (src / "CMakeLists.txt").is_file():
            return src
        tmp = Path(tempfile.mkdtemp(prefix="src.tmp-", dir=base))
        try:
            _extract_vendor(tarball, tmp)
            if not (tmp / "CMakeLists.txt").is_file():
                raise OdysseyError(
                    f"{tarball} has no vendor/llama.cpp tree.",
                    hint="Use a llama-cpp-python source distribution (.tar.gz), not a wheel.",
                )
            if src.exists():
                shutil.rmtree(src)
            tmp.chmod(0o755)  # mkdtemp makes it private; the tree is a shared, read-only cache
            os.replace(tmp, src)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return src


def _extract_vendor(tarball: Path, dest: Path) -> None:
    marker = "vendor/llama.cpp/"  # directly under the sdist's top folder (not .git/modules/vendor/...)
    from odyssey.ui import status

    with status(f"Extracting llama.cpp from {tarball.name}"), tarfile.open(tarball, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[1] if "/" in member.name else ""
            if not inner.startswith(marker) or "/.git" in "/" + inner[len(marker) :]:
                continue
            member.name = inner[len(marker) :]
            if member.name:
                members.append(member)
        try:  # the "data" filter refuses members and links that leave dest, device files and setuid bits
            tar.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise OdysseyError(
                f"{tarball} holds a member that would be written outside the source folder: {exc}",
                hint="the tarball is damaged or not a llama-cpp-python sdist; delete it (or unset "
                "ODYSSEY_LLAMACPP_SDIST) so a clean one is downloaded",
            ) from None


def convert_script() -> Path:
    """llama.cpp's ``convert_hf_to_gguf.py`` (run it with this Python; it imports the ``gguf`` package,
    preferring the ``gguf-py`` copy next to it so converter and format stay at one revision)."""
    script = source_dir() / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise OdysseyError(
            f"{script} is missing from the llama.cpp sources.",
            hint=f"Delete {root()} so the sources are extracted again.",
        )
    return script


# ---------------------------------------------------------------------------------------------
# Build


def _variant() -> str:
    """'' for a plain native build, '-noamx' for one kept off AMX (its own build and bin folders,
    so tools built before the AMX check are not reused)."""
    return "-noamx" if amx_cmake_flags() else ""


def bin_dir() -> Path:
    return root() / f"bin{_variant()}"


def _exe(name: str) -> str:
    return name + (".exe" if os.name == "nt" else "")


def available(name: str) -> bool:
    """Whether a tool is already built (never starts a build)."""
    return (bin_dir() / _exe(name)).is_file()


def check_toolchain() -> dict[str, str]:
    """cmake and a C++ compiler, or a clear error saying how to get them."""
    cmake = shutil.which("cmake")
    cxx = os.environ.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    missing = [what for what, found in (("cmake", cmake), ("a C++ compiler (g++ or clang++)", cxx)) if not found]
    if missing:
        raise MissingDependency(
            f"Building llama.cpp's tools needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            "not installed.",
            hint="Debian/Ubuntu: sudo apt-get install cmake build-essential; macOS: xcode-select --install && "
            "brew install cmake; or pip install cmake (cmake only).",
        )
    return {"cmake": cmake, "cxx": cxx}


def tool_path(name: str, *, build: bool = True) -> Path:
    """Path to a llama.cpp tool (``llama-server``, ``llama-quantize``), building them on first use.

    The first call takes several minutes (a CMake build on all cores); later calls are instant.
    """
    if name not in TOOLS:
        raise OdysseyError(f"Unknown llama.cpp tool {name!r}.", hint=f"Odyssey builds: {', '.join(TOOLS)}.")
    path = bin_dir() / _exe(name)
    if path.is_file():
        return path
    if not build or os.environ.get("ODYSSEY_LLAMACPP_BUILD") == "0":
        raise OdysseyError(
            f"{name} is not built yet ({path}).",
            hint="Run `odyssey optimize tools` once (builds llama.cpp's tools, several minutes).",
        )
    build_tools()
    return path


def build_tools(targets: tuple[str, ...] = TOOLS, jobs: int | None = None) -> Path:
    """Configure and build the tools into ``bin/`` (atomic: built elsewhere, then renamed in)."""
    out = bin_dir()
    if all((out / _exe(t)).is_file() for t in targets):
        return out
    tools = check_toolchain()
    src = source_dir()
    base = root()
    with _locked(base / ".build.lock"):
        if all((out / _exe(t)).is_file() for t in targets):
            return out
        build = base / f"build{_variant()}"  # kept between attempts: an interrupted build resumes
        log_path = base / "build.log"
        jobs = jobs or int(os.environ.get("ODYSSEY_LLAMACPP_JOBS") or 0) or os.cpu_count() or 2
        configure = [tools["cmake"], "-S", str(src), "-B", str(build), *CMAKE_FLAGS, *amx_cmake_flags()]
        make = [tools["cmake"], "--build", str(build), "--config", "Release", "-j", str(jobs), "--target", *targets]
        _say(
            f"Building llama.cpp tools ({', '.join(targets)}) from {PACKAGE} {version()} sources with {jobs} jobs; "
            "this happens once and takes several minutes."
        )
        start = time.time()
        with open(log_path, "w") as log:
            _run_logged(configure, log, log_path, "Configuring llama.cpp (cmake)")
            _run_logged(make, log, log_path, "Building llama.cpp")
        tmp = Path(tempfile.mkdtemp(prefix="bin.tmp-", dir=base))
        try:
            for target in targets:
                built = _find_binary(build, target)
                shutil.copy2(built, tmp / _exe(target))
            if out.exists():  # an older partial set: merge what it has that we did not just build
                for old in out.iterdir():
                    if not (tmp / old.name).exists():
                        shutil.copy2(old, tmp / old.name)
                shutil.rmtree(out)
            tmp.chmod(0o755)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _say(f"Built {', '.join(targets)} in {time.time() - start:.0f} s -> {out}")
    return out


def _find_binary(build: Path, target: str) -> Path:
    for candidate in (build / "bin" / _exe(target), build / "bin" / "Release" / _exe(target)):
        if candidate.is_file():
            return candidate
    hits = [p for p in build.rglob(_exe(target)) if p.is_file() and os.access(p, os.X_OK)]
    if not hits:
        raise OdysseyError(
            f"The llama.cpp build finished but {target} was not produced.", hint=f"See {build.parent / 'build.log'}."
        )
    return hits[0]


def _run_logged(cmd: list[str], log, log_path: Path, title: str) -> None:
    """Run a build command, stream its output to the log and show CMake's ``[ 42%]`` progress."""
    from odyssey.ui import status

    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    tail: list[str] = []
    with status(title) as update:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line.rstrip()])[-25:]
            match = re.match(r"\[\s*(\d+)%\]", line)
            if match:
                update(f"{match.group(1)}%")
        code = proc.wait()
    log.flush()
    if code != 0:
        raise OdysseyError(
            f"{title} failed (exit code {code}). Last lines:\n" + "\n".join(tail),
            hint=f"Full log: {log_path}. Fix the toolchain problem shown and run again; "
            "the build resumes where it stopped.",
        )


# ---------------------------------------------------------------------------------------------
# Using the tools


def pre_tokenizer_name(tokenizer_json: Path) -> str | None:
    """llama.cpp's name for a tokenizer.json pre-tokenizer it may not recognize by hash: GPT-2's byte-level
    regex split is 'gpt-2' (Odyssey's tiny models; the packaged SmolLM2's tokenizer as rebuilt here)."""
    if not tokenizer_json.exists():
        return None
    pre = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    return None


# The converter refuses a BPE tokenizer whose pre-tokenizer it does not know (its hash list covers
# published models, not Odyssey's tiny test tokenizers or a user's retrained one). When llama.cpp
# will never tokenize text itself (the evaluation engine sends token ids), the pre-tokenizer is
# irrelevant, and "default" is written instead of failing. An export that llama.cpp will tokenize
# text for names the real pre-tokenizer instead (read from tokenizer.json by the caller), passed in
# ODYSSEY_GGUF_PRE_TOKENIZER; the converter's own detection still wins when it knows the hash.
_TOLERANT_PRE = """
import os, runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
import conversion.base as base
known = base.TextModel.get_vocab_base_pre
def tolerant(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        return os.environ.get("ODYSSEY_GGUF_PRE_TOKENIZER") or "default"
base.TextModel.get_vocab_base_pre = tolerant
runpy.run_path(script, run_name="__main__")
"""


def convert_hf_to_gguf(
    model_dir: Path,
    outfile: Path,
    outtype: str = "f16",
    *,
    token_ids_only: bool = False,
    pre_tokenizer: str | None = None,
) -> Path:
    """Convert a transformers checkpoint folder into a GGUF file with llama.cpp's converter.

    ``outtype`` is one of the converter's types: f32, f16, bf16, q8_0, tq1_0, tq2_0, auto.
    ``token_ids_only``: the file will only ever be given token ids (see ``_TOLERANT_PRE``).
    ``pre_tokenizer``: llama.cpp's name for the tokenizer's pre-tokenizer (``gpt-2``, ...), written
    when the converter does not recognize the tokenizer (see ``_TOLERANT_PRE``).
    """
    outfile = Path(outfile)
    outfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = outfile.with_name(outfile.name + ".part")
    tolerant = token_ids_only or pre_tokenizer is not None
    launcher = [sys.executable, "-c", _TOLERANT_PRE] if tolerant else [sys.executable]
    cmd = [*launcher, str(convert_script()), str(model_dir), "--outfile", str(tmp), "--outtype", outtype]
    env = {**os.environ, "ODYSSEY_GGUF_PRE_TOKENIZER": pre_tokenizer or ""}
    from odyssey.engines.process import die_with_parent
    from odyssey.ui import status

    with status(f"Converting {Path(model_dir).name} to GGUF ({outtype})"):  # a kill -9 of Odyssey ends it too
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=die_with_parent)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise OdysseyError(
            f"convert_hf_to_gguf.py failed on {model_dir}:\n" + (proc.stderr or proc.stdout)[-2000:],
            hint="llama.cpp's converter supports the architectures listed in its source; "
            "merge LoRA adapters into the base model before converting.",
        )
    os.replace(tmp, outfile)
    return outfile


# llama-quantize's type names for the types Odyssey offers (the tool accepts many more).
QUANT_TYPES = ("q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_k_s", "q4_0", "q3_k_m", "q2_k", "f16", "bf16")


# k-quants pack 256 weights per super-block; a tensor whose rows are not a multiple of that cannot
# use them, and llama.cpp then falls back to a 32-block type (q5_0 under q4_k_m, q8_0 under q6_k).
KQUANT_BLOCK = 256
FALLBACK_TYPES = ("q4_0", "iq4_nl", "q5_0", "q8_0")


def kquant_incompatible_tensors(gguf_file: Path) -> list[str]:
    """Names of the quantizable (2-D and larger) tensors whose rows do not fit 256-weight blocks."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_file))
    # ReaderTensor.shape is in ggml order: shape[0] is the row length (ne[0]).
    return [
        t.name
        for t in reader.tensors
        if len(t.shape) >= 2 and int(t.shape[0]) % KQUANT_BLOCK != 0 and t.name.endswith(".weight")
    ]


def gguf_fallback(qtype: str, fallback: str | None) -> str | None:
    """The fallback type to pass for ``qtype``, or None: llama.cpp's own choice (asked for, or a type
    that is not a k-quant and so needs none). An unknown type is a clear error."""
    if fallback in (None, "", "llama.cpp") or "_k" not in qtype.lower():
        return None
    if fallback not in FALLBACK_TYPES:
        raise OdysseyError(
            f"Unknown GGUF fallback type {fallback!r}.",
            hint=f"Use llama.cpp (its own choice) or one of: {', '.join(FALLBACK_TYPES)}.",
        )
    return fallback


def quantize_gguf(
    src: Path, dst: Path, qtype: str, threads: int | None = None, *, engine: str = "auto", fallback: str | None = None
) -> Path:
    """Re-quantize a GGUF file (normally an f16/f32 conversion).

    ``engine``: ``tool`` runs ``llama-quantize``; ``binding`` calls ``llama_cpp.llama_model_quantize``,
    the same llama.cpp function inside the installed llama-cpp-python (no build needed); ``auto``
    uses the tool when it is built, else the binding.

    ``fallback`` (q4_0, iq4_nl, q5_0, q8_0): the type for tensors a k-quant cannot hold, instead of
    llama.cpp's own fallback. On SmolLM2 (576-wide rows) q4_k_m otherwise stores 80 % of the weights
    at q5_0. Passed to ``llama-quantize --tensor-type-file``, so it needs the tool.
    """
    qtype = qtype.lower()
    if qtype not in QUANT_TYPES:
        raise OdysseyError(f"Unknown GGUF quantization type {qtype!r}.", hint=f"Use one of: {', '.join(QUANT_TYPES)}.")
    fallback = gguf_fallback(qtype, fallback)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    if fallback is None and (engine == "binding" or (engine == "auto" and not available("llama-quantize"))):
        return _quantize_with_binding(Path(src), dst, tmp, qtype, threads)
    cmd = [str(tool_path("llama-quantize"))]
    overrides = dst.with_name(dst.name + ".tensor-types.txt")
    if fallback:
        names = kquant_incompatible_tensors(Path(src))
        # llama-quantize reads NAME=TYPE pairs whose names are regular expressions (searched, not
        # matched): anchor and escape each name so blk.1 does not also select blk.10.
        overrides.write_text("".join(f"^{re.escape(n)}$={fallback}\n" for n in names))
        if names:
            cmd += ["--tensor-type-file", str(overrides)]
    cmd += [str(src), str(tmp), qtype.upper(), str(threads or os.cpu_count() or 1)]
    from odyssey.engines.process import die_with_parent
    from odyssey.ui import status

    with status(f"llama-quantize {Path(src).name} -> {qtype}" + (f" (fallback {fallback})" if fallback else "")):
        proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=die_with_parent)
    overrides.unlink(missing_ok=True)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise OdysseyError(
            f"llama-quantize failed ({qtype}) on {src}:\n" + (proc.stderr or proc.stdout)[-2000:],
            hint="Check that the input is a valid f16/f32 GGUF file.",
        )
    os.replace(tmp, dst)
    return dst


def _quantize_with_binding(src: Path, dst: Path, tmp: Path, qtype: str, threads: int | None) -> Path:
    import ctypes

    import llama_cpp

    from odyssey.ui import status

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}")
    params.nthread = int(threads or os.cpu_count() or 1)
    with status(f"llama_model_quantize {src.name} -> {qtype}"):
        code = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if code != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise OdysseyError(
            f"llama_model_quantize failed ({qtype}, code {code}) on {src}",
            hint="Check that the input is a valid f16/f32 GGUF file.",
        )
    os.replace(tmp, dst)
    return dst


def _main(argv: list[str]) -> int:
    """``python -m odyssey.models.llamacpp build``: what scripts/setup.sh runs (exit 4 with the reason
    when the toolchain is missing, so set-up can go on without the tools)."""
    if argv[:1] != ["build"]:
        print("usage: python -m odyssey.models.llamacpp build", file=sys.stderr)
        return 2
    if all(available(t) for t in TOOLS):
        print(f"llama.cpp tools already built: {bin_dir()}")
        return 0
    try:
        print(build_tools())
    except OdysseyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code) if hasattr(exc, "exit_code") else 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
