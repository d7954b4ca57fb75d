"""The PAL sandbox: programs run and return values; file writes outside the temp dir, network,
new processes, native code, runaway memory, CPU and wall time are all stopped."""

import os
import signal
import socket
import threading

from odyssey.augment.sandbox import SandboxLimits, run_python

FAST = SandboxLimits(timeout_s=20, cpu_s=10)


def test_solution_value_and_fallbacks_to_answer_and_printed_line():
    assert run_python("def solution():\n    return 6 * 7", FAST).value == 42
    assert run_python("answer = 2.5 * 4", FAST).value == 10.0
    printed = run_python("print('working')\nprint(19)", FAST)
    assert printed.ok and printed.value == "19" and "working" in printed.stdout


def test_errors_are_reported_not_raised():
    bad = run_python("def solution():\n    return 1 / 0", FAST)
    assert not bad.ok and bad.error.startswith("ZeroDivisionError")
    syntax = run_python("def (", FAST)
    assert not syntax.ok and "SyntaxError" in syntax.error


def test_writes_only_inside_its_temp_dir(tmp_path):
    target = tmp_path / "escaped.txt"
    code = f"open({str(target)!r}, 'w').write('x')"
    result = run_python(code, FAST)
    assert not result.ok and "not allowed" in result.error
    assert not target.exists()
    for attempt in (
        f"import os\nos.remove({str(tmp_path)!r})",
        f"import os\nos.mkdir({str(tmp_path / 'd')!r})",
        f"import os\nos.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
    ):
        blocked = run_python(attempt, FAST)
        assert not blocked.ok and "not allowed" in blocked.error, attempt
    assert tmp_path.exists() and not (tmp_path / "d").exists() and not target.exists()
    inside = run_python("open('scratch.txt', 'w').write('ok')\nanswer = open('scratch.txt').read()", FAST)
    assert inside.ok and inside.value == "ok"


def test_network_is_blocked_and_nothing_reaches_a_real_listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            conn, _ = server.accept()
            accepted.append(conn)
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        raw = run_python(
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))\nanswer = 'connected'", FAST
        )
        http = run_python(
            f"import urllib.request\nanswer = urllib.request.urlopen('http://127.0.0.1:{port}/').read()", FAST
        )
    finally:
        thread.join()
        server.close()
    assert not raw.ok and "socket" in raw.error
    assert not http.ok and "socket" in http.error
    assert accepted == []


def test_fork_bomb_subprocess_and_native_code_are_blocked():
    bomb = run_python("import os\nwhile True:\n    os.fork()", FAST)
    assert not bomb.ok and "os.fork" in bomb.error
    for code, event in (
        ("import subprocess\nsubprocess.run(['true'])", "subprocess.Popen"),
        ("import os\nos.system('true')", "os.system"),
        ("import multiprocessing\nmultiprocessing.Process(target=print).start()", "os.fork"),
        ("import ctypes", "ctypes.dlopen"),
    ):
        result = run_python(code, FAST)
        assert not result.ok and event in result.error, (code, result.error)


def test_memory_limit():
    result = run_python("x = bytearray(2 * 1024 ** 3)\nanswer = len(x)", SandboxLimits(timeout_s=20, memory_mb=256))
    assert not result.ok and "MemoryError" in result.error


def test_wall_clock_timeout_kills_the_process_group():
    result = run_python("import time\ntime.sleep(60)", SandboxLimits(timeout_s=1.5, cpu_s=10))
    assert result.timed_out and not result.ok and "time limit" in result.error
    assert result.duration_ms < 30_000


def test_cpu_limit_kills_a_spin():
    result = run_python("while True:\n    pass", SandboxLimits(timeout_s=120, cpu_s=1))
    assert not result.ok
    assert result.exit_signal == signal.SIGXCPU or result.timed_out
    assert "CPU" in result.error or "time limit" in result.error


def test_protections_are_reported():
    result = run_python("answer = 1", FAST)
    for layer in ("rlimit_cpu", "rlimit_as", "audit_hook", "temp_cwd", "wall_clock_kill"):
        assert layer in result.protections
    if os.geteuid() == 0:
        assert "network_namespace" in result.protections
