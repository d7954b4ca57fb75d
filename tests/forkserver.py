"""A fork server for running many `odyssey` commands in a test: torch, transformers and peft are imported
once, then each command is a fresh forked process that runs ``odyssey.cli.main`` with its own argv, working
folder, stdout/stderr files and exit code. The README test runs about fifty commands; each would otherwise
pay ~5 s of imports on two cores, which is most of its work on a tiny model.

Run as ``python -m tests.forkserver``; one JSON request a line on stdin:
``{"argv": [...], "cwd": ..., "stdout": path, "stderr": path}`` (or ``"python": code`` instead of argv), and
two JSON replies a line on the original stdout: ``{"pid": n}`` when the child starts, ``{"rc": n}`` when it ends.
Nothing has run in this process when it forks (no torch op, no thread pool), so the children start clean.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _child(request: dict) -> None:
    """In the forked child: become the command, then exit with its code (never returns)."""
    code = 1
    try:
        os.setsid()  # its own group: a command that hangs is killed with the servers it started
        os.chdir(request["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        if "python" in request:
            sys.argv = ["-c"]
            exec(compile(request["python"], request.get("filename", "<readme>"), "exec"), {"__name__": "__main__"})
        else:
            from odyssey.cli import main

            sys.argv = ["odyssey", *request["argv"]]
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve() -> None:
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything this process prints must not land in the replies
    from odyssey.ui import QUIET_LIBRARY_ENV

    # What `odyssey` sets before a command imports any library (some read these only when imported).
    if os.environ.get("ODYSSEY_VERBOSE", "") in {"", "0"}:
        for name, value in QUIET_LIBRARY_ENV.items():
            os.environ.setdefault(name, value)
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import odyssey.cli  # noqa: F401

    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve()
