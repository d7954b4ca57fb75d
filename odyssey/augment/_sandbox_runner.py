"""Runs one untrusted program inside the PAL sandbox's child process (stdlib only, Python -I -S).

Reads ``{"code": ..., "tmpdir": ...}`` as JSON on stdin, installs an audit hook (PEP 578) that
refuses network sockets, new processes, native code loading and file writes outside ``tmpdir``,
runs the code, and writes one JSON object to the original stdout: ok, value, stdout, error.

The audit hook is one layer of several (see ``odyssey.augment.sandbox``): PEP 578 itself says an
in-process hook is not a security boundary, so the parent also applies rlimits, a fresh network
namespace where the kernel allows one, a throw-away working directory and a wall-clock kill.
"""

# Modules a generated program commonly uses, imported before the hook so their own start-up
# (which may open files or load shared libraries) is not mistaken for the program's doing.
import collections  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import io
import itertools  # noqa: F401
import json
import math  # noqa: F401
import os
import re  # noqa: F401
import statistics  # noqa: F401
import sys

config = json.loads(sys.stdin.read())
TMP = os.path.realpath(config["tmpdir"])
os.chdir(TMP)
RESULT_FD = os.dup(1)

BLOCKED_EVENTS = (
    "socket.",
    "os.fork",
    "os.forkpty",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.kill",
    "os.killpg",
    "subprocess.",
    "ctypes.",
    "_posixsubprocess",
    "pty.",
    "resource.setrlimit",
    "resource.prlimit",
    "os.setuid",
    "os.setgid",
    "os.chroot",
    "os.add_dll_directory",
    "mmap.",
    "webbrowser.",
)
PATH_EVENTS = {
    "os.remove": (0,),
    "os.rename": (0, 1),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.link": (0, 1),
    "os.symlink": (0, 1),
    "os.truncate": (0,),
    "os.utime": (0,),
    "shutil.rmtree": (0,),
    "shutil.move": (0, 1),
    "shutil.copyfile": (1,),
    "os.setxattr": (0,),
    "os.removexattr": (0,),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _inside(path) -> bool:
    if isinstance(path, int):
        return False
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    full = os.path.realpath(os.path.join(os.getcwd(), os.fspath(path)))
    return full == TMP or full.startswith(TMP + os.sep)


def _hook(event, args):
    if event.startswith(BLOCKED_EVENTS):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or (flags is not None and flags & WRITE_FLAGS)
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing {path!r} is not allowed (only inside the temp dir)")
    elif event in PATH_EVENTS:
        for i in PATH_EVENTS[event]:
            if i < len(args) and args[i] is not None and not _inside(args[i]):
                raise PermissionError(f"sandbox: {event} on {args[i]!r} is not allowed (only inside the temp dir)")


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, (fractions.Fraction, decimal.Decimal)):
        return float(value)
    return repr(value)


def main():
    captured = io.StringIO()
    result = {"ok": False, "value": None, "stdout": "", "error": None}
    sys.addaudithook(_hook)
    namespace = {"__name__": "__sandbox__"}
    real_stdout = sys.stdout
    sys.stdout = captured
    try:
        exec(compile(config["code"], "<program>", "exec"), namespace)
        value = None
        if callable(namespace.get("solution")):
            value = namespace["solution"]()
        elif "answer" in namespace:
            value = namespace["answer"]
        elif "result" in namespace:
            value = namespace["result"]
        else:
            lines = [line for line in captured.getvalue().splitlines() if line.strip()]
            value = lines[-1].strip() if lines else None
        result.update(ok=True, value=_jsonable(value))
    except BaseException as exc:  # the program's own failure is data, not a crash of the runner
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        sys.stdout = real_stdout
    result["stdout"] = captured.getvalue()[-4000:]
    os.write(RESULT_FD, json.dumps(result).encode())


main()
