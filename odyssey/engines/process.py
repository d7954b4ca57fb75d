"""A managed child server (llama-server, vLLM): started, waited for, guarded, stopped.

Shared by the evaluation engines (``odyssey.engines``) and ``odyssey serve``'s upstream
backends, so both give the child the same guarantees:

* **It dies with its parent.** On Linux the child gets ``PR_SET_PDEATHSIG = SIGKILL`` (set in the
  child between fork and exec), so a ``kill -9`` of Odyssey cannot leave an orphan holding a
  port and gigabytes of memory. It also runs in its own session (process group), so a Ctrl-C in
  the terminal reaches Odyssey first and Odyssey stops the child in order.
* **Only Odyssey can talk to it.** It binds to 127.0.0.1 on a free port and gets a random API key
  of its own (``llama-server --api-key``, ``vllm --api-key``); the key never leaves this process,
  so a local process cannot bypass the gateway's keys, limits and capture.
* **Start-up is bounded.** ``start`` polls ``/health`` until the child answers, fails fast if it
  exits, and stops it if it never becomes healthy.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from odyssey.errors import Unavailable

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """``preexec_fn`` for a child that must not outlive a killed Odyssey (a converter, a quantizer):
    the kernel sends it SIGKILL when its parent dies (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except OSError:
            pass


def _die_with_parent() -> None:  # runs in the child after fork, before exec
    die_with_parent()
    os.setsid()


class ManagedServer:
    """A child HTTP server on 127.0.0.1 with its own random key.

    ``command`` is a function of (port, api_key) returning the argument list (never a shell
    string: no user input reaches a shell).
    """

    def __init__(self, command: Callable[[int, str], list[str]], *, log_path: Path | None = None, name: str = "server"):
        self._command = command
        self.log_path = log_path
        self.name = name
        self.port = free_port()
        self.api_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def launch(self) -> None:
        """Start the child. Call it from a long-lived thread (the main thread or the event loop's):
        Linux sends the parent-death signal when the *thread* that forked exits, so a child
        launched from a short-lived worker thread would be killed with that thread."""
        cmd = self._command(self.port, self.api_key)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            where = f"; see its log: {self.log_path}" if self.log_path else ""
            raise Unavailable(
                f"{self.name} exited with code {self.proc.returncode}{where}",
                hint="run the command again; if it keeps failing, the log says why",
            )

    def wait_healthy(self, timeout: float = 300) -> None:
        """Block until GET /health answers 200 (synchronous; async callers use a thread)."""
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    if client.get("/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise Unavailable(
            f"{self.name} did not become healthy within {timeout:.0f} s",
            hint=f"see its log: {self.log_path}" if self.log_path else None,
        )

    def start(self, timeout: float = 300) -> ManagedServer:
        self.launch()
        self.wait_healthy(timeout)
        return self

    def stop(self, grace: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
