"""A sandbox for model-written Python (PAL and the ReAct calculator).

Each program runs in a fresh ``python -I -S`` subprocess (no user site, no PYTHON* variables, no
site-packages) with these layers, each of which stops something on its own:

1. rlimits set before exec: CPU seconds (SIGXCPU kills a spin), address space (a huge allocation
   raises MemoryError), file size, open files, no core dumps, and a process count;
2. a new, empty network namespace (``unshare(CLONE_NEWNET)``, or with a user namespace when not
   root) where the kernel allows it: no interface but a down loopback, so nothing can be reached;
3. an audit hook (PEP 578) in the child that refuses sockets, fork/exec/spawn/subprocess, ctypes
   and writes, renames or deletes outside the program's temporary working directory;
4. a wall-clock timeout after which the whole process group is SIGKILLed;
5. a temporary working directory that is deleted afterwards.

No maintained library does this for CPython on Linux without a container runtime (RestrictedPython
rewrites the AST and breaks ordinary programs; nsjail/firejail/bubblewrap are external binaries
that may be absent), so it is written here. ``protections`` in each result says which layers were
active, because the namespace layer depends on the kernel. Running as root, RLIMIT_NPROC is not
enforced by Linux; the audit hook is then what stops a fork bomb.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

RUNNER = Path(__file__).with_name("_sandbox_runner.py")
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000


@dataclass
class SandboxLimits:
    timeout_s: float = 5.0
    cpu_s: int = 3
    memory_mb: int = 512
    file_mb: int = 8
    open_files: int = 64
    processes: int = 64
    network_namespace: bool = True


@dataclass
class SandboxResult:
    ok: bool
    value: object = None
    stdout: str = ""
    error: str | None = None
    timed_out: bool = False
    exit_signal: int | None = None
    duration_ms: float = 0.0
    protections: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _unshare_network() -> bool:
    """Enter a new network namespace (root), or a user+network namespace (unprivileged)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return True
    return False


def _preexec(limits: SandboxLimits, status_w: int):
    """Runs in the child between fork and exec: apply limits, report which layers hold."""

    def apply():
        import resource

        layers = []
        mb = 1024 * 1024
        for name, value in (
            ("RLIMIT_CPU", limits.cpu_s),
            ("RLIMIT_AS", limits.memory_mb * mb),
            ("RLIMIT_FSIZE", limits.file_mb * mb),
            ("RLIMIT_NOFILE", limits.open_files),
            ("RLIMIT_NPROC", limits.processes),
            ("RLIMIT_CORE", 0),
        ):
            try:
                # CPU: the soft limit sends SIGXCPU, the hard one (a second later) SIGKILL.
                hard = value + 1 if name == "RLIMIT_CPU" else value
                resource.setrlimit(getattr(resource, name), (value, hard))
                layers.append(name.lower())
            except (ValueError, OSError):
                pass
        if limits.network_namespace and _unshare_network():
            layers.append("network_namespace")
        os.write(status_w, (",".join(layers)).encode())
        os.close(status_w)

    return apply


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` in the sandbox. Its answer is ``solution()`` if defined, else ``answer`` or
    ``result``, else the last line it printed."""
    limits = limits or SandboxLimits()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="odyssey-sandbox-") as tmp:
        status_r, status_w = os.pipe()
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": tmp, "TMPDIR": tmp}
        with warnings.catch_warnings():
            # lancedb (loaded when a RAG collection is open) warns on every fork. The forked child only
            # sets rlimits, unshares its network and execs a fresh interpreter: it never touches lancedb.
            warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(RUNNER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=tmp,
                env=env,
                start_new_session=True,
                close_fds=True,
                pass_fds=(status_w,),
                preexec_fn=_preexec(limits, status_w),
            )
        os.close(status_w)
        payload = json.dumps({"code": code, "tmpdir": tmp}).encode()
        timed_out = False
        try:
            out, err = proc.communicate(payload, timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group: anything it started dies too
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
        with os.fdopen(status_r, "rb") as fh:
            layers = [p for p in fh.read().decode().split(",") if p]
        layers += ["audit_hook", "temp_cwd", "wall_clock_kill"]
    duration = (time.perf_counter() - start) * 1000
    exit_signal = -proc.returncode if proc.returncode is not None and proc.returncode < 0 else None
    if timed_out:
        return SandboxResult(
            False,
            error=f"killed: ran past the {limits.timeout_s:g} s time limit",
            timed_out=True,
            exit_signal=exit_signal,
            duration_ms=duration,
            protections=layers,
        )
    try:
        data = json.loads(out.decode() or "null")
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        reason = {
            signal.SIGXCPU: f"killed: used more than {limits.cpu_s} s of CPU time",
            signal.SIGKILL: "killed (SIGKILL: the CPU hard limit, or out of memory)",
            signal.SIGSEGV: "crashed (SIGSEGV)",
        }.get(exit_signal)
        detail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
        return SandboxResult(
            False,
            error=reason or f"the program exited with code {proc.returncode}" + (f": {detail[0]}" if detail else ""),
            exit_signal=exit_signal,
            duration_ms=duration,
            protections=layers,
        )
    return SandboxResult(
        bool(data.get("ok")),
        data.get("value"),
        data.get("stdout", ""),
        data.get("error"),
        exit_signal=exit_signal,
        duration_ms=duration,
        protections=layers,
    )
