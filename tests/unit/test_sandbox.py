"""The code sandbox against ordinary programs and hostile ones (these tests run as root on the dev machine, which
is exactly when RLIMIT_NPROC alone would not hold)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from collab.metrics.sandbox import (
    PROCESS_MARKER,
    SandboxResult,
    SandboxUnavailable,
    run_python,
)

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0


def sandbox_processes(run_id: str) -> list[int]:
    """Live (non-zombie) processes of one sandbox run (other runs, e.g. a parallel test session, are ignored)."""
    marker = f"{PROCESS_MARKER}-{run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith("Z"):
            continue
        if marker in cmdline:
            found.append(int(entry))
    return found


def no_processes_left(result: SandboxResult, deadline_s: float = 3.0) -> bool:
    assert result.run_id
    end = time.monotonic() + deadline_s
    while sandbox_processes(result.run_id):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def has_private_filesystem(result: SandboxResult) -> bool:
    return "readonly_root" in result.isolation or "readonly_tmp" in result.isolation


def test_program_output_and_exit_status_are_reported() -> None:
    result = run_python("import sys\nprint('hello')\nprint('warn', file=sys.stderr)")
    assert result.passed and result.returncode == 0 and result.error_kind is None and not result.timed_out
    assert result.stdout == "hello\n" and result.stderr == "warn\n"


def test_strongest_available_isolation_is_active() -> None:
    layers = set(run_python("pass").isolation)
    assert {"rlimits", "process_group"} <= layers
    if IS_ROOT:
        assert "uid" in layers
    if "mount_namespace" in layers:
        assert {"net_namespace", "pid_namespace", "tmpfs_workdir"} <= layers


@pytest.mark.parametrize(
    ("code", "kind", "returncode"),
    [
        ("raise ValueError('boom')", "exception", 1),
        ("import sys\nsys.exit(3)", "exception", 3),
        ("def f(:\n    pass", "syntax", 86),
        ("if True:\nprint(1)", "syntax", 86),
    ],
)
def test_failures_are_classified(code: str, kind: str, returncode: int) -> None:
    result = run_python(code)
    assert not result.passed and result.error_kind == kind and result.returncode == returncode


def test_infinite_loop_is_stopped_at_the_time_limit() -> None:
    start = time.monotonic()
    result = run_python("while True:\n    pass", timeout_s=1.0)
    assert time.monotonic() - start < 1.0 + 2.0
    assert result.timed_out and result.error_kind == "timeout" and not result.passed
    assert no_processes_left(result)


def test_fork_bomb_is_contained_and_leaves_no_processes() -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    result = run_python(bomb, timeout_s=1.0, max_processes=8)
    assert time.monotonic() - start < 1.0 + 2.5
    assert not result.passed
    assert no_processes_left(result)


def test_process_limit_applies_even_as_root() -> None:
    code = (
        "import os, time\n"
        "pids = []\n"
        "try:\n"
        "    for _ in range(20):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(5)\n"
        "            os._exit(0)\n"
        "        pids.append(pid)\n"
        "except OSError:\n"
        "    print('limited at', len(pids))\n"
    )
    result = run_python(code, max_processes=4)
    assert result.stdout.startswith("limited at"), result
    assert int(result.stdout.split()[-1]) < 4
    assert no_processes_left(result)


def test_process_that_leaves_the_process_group_is_killed() -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\nprint('parent done')\n"
    result = run_python(code)
    assert result.passed and result.stdout == "parent done\n"
    assert no_processes_left(result)


def test_memory_hog_hits_the_memory_limit() -> None:
    result = run_python("block = bytearray(2 * 1024**3)\nprint(len(block))", memory_mb=256)
    assert not result.passed and result.error_kind == "memory"


def test_huge_files_hit_the_file_size_limit() -> None:
    result = run_python("open('big', 'wb').write(b'x' * (8 << 20))", max_file_mb=1)
    assert not result.passed and "File too large" in result.stderr


@pytest.mark.parametrize("where", ["tmp", "repo"])
def test_writing_outside_the_work_directory_fails(where: str) -> None:
    target = (
        Path(f"/tmp/collab_sandbox_escape_{secrets.token_hex(4)}")
        if where == "tmp"
        else REPO / f"collab_sandbox_escape_{secrets.token_hex(4)}"
    )
    try:
        result = run_python(f"open({str(target)!r}, 'w').write('escaped')")
        if where == "tmp" and not has_private_filesystem(result):
            pytest.skip(f"no mount namespace on this machine (layers: {result.isolation}); /tmp is world-writable")
        assert not result.passed and result.error_kind == "exception"
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


def test_work_directory_is_writable_and_deleted_afterwards() -> None:
    code = (
        "import os, tempfile\n"
        "open('notes.txt', 'w').write('ok')\n"
        "with tempfile.NamedTemporaryFile() as f:\n"
        "    f.write(b'x')\n"
        "print(os.getcwd())\n"
    )
    result = run_python(code)
    assert result.passed, result.stderr
    assert not Path(result.stdout.strip()).exists()


def test_api_keys_in_the_parent_environment_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    code = (
        "import os\n"
        "print(sorted(os.environ))\n"
        "print(os.environ.get('OPENAI_API_KEY'))\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n"
        "        if b'sk-secret' in open(f'/proc/{pid}/environ', 'rb').read():\n"
        "            print('LEAK', pid)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = run_python(code)
    assert result.passed, result.stderr
    assert "sk-secret" not in result.stdout and "LEAK" not in result.stdout
    assert result.stdout.splitlines()[0] == "['HOME', 'LANG', 'PATH', 'TMPDIR']"


def test_network_is_unreachable_even_on_loopback() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        result = run_python(code)
    assert not result.passed and "connected" not in result.stdout
    assert "unreachable" in result.stderr or "disabled" in result.stderr


def test_stdin_is_closed() -> None:
    result = run_python("input()")
    assert not result.passed and "EOFError" in result.stderr


def test_output_is_truncated() -> None:
    result = run_python("print('x' * 100_000)", max_output_bytes=1000)
    assert result.passed and result.stdout.startswith("x" * 1000)
    assert "more bytes truncated" in result.stdout and len(result.stdout) < 1100


def test_concurrent_runs_from_threads_do_not_interfere() -> None:
    results: list[SandboxResult] = []
    code = "import os, time\ntime.sleep(0.3)\nprint('ok')"
    threads = [threading.Thread(target=lambda: results.append(run_python(code, max_processes=2))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.stdout for r in results] == ["ok\n"] * 4


def test_missing_interpreter_means_sandbox_unavailable() -> None:
    with pytest.raises(SandboxUnavailable):
        run_python("print(1)", python="/nonexistent/python3")


SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.mark.skipif(not IS_ROOT or SYSTEM_PYTHON is None, reason="fallback test needs root and a system python")
def test_fallback_without_namespaces_still_contains_hostile_code() -> None:
    # The weaker layers used where namespaces are unavailable: a unique uid, rlimits and a patched socket module.
    assert SYSTEM_PYTHON is not None
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_python(bomb, timeout_s=1.0, max_processes=8, use_namespaces=False, python=SYSTEM_PYTHON)
    assert "net_namespace" not in result.isolation and "uid" in result.isolation
    assert not result.passed and no_processes_left(result)
    net = run_python("import socket\nsocket.create_connection(('127.0.0.1', 9))", use_namespaces=False,
                     python=SYSTEM_PYTHON)
    assert not net.passed and "disabled in the sandbox" in net.stderr
    repo = REPO / f"collab_sandbox_escape_{secrets.token_hex(4)}"
    write = run_python(f"open({str(repo)!r}, 'w').write('x')", use_namespaces=False, python=SYSTEM_PYTHON)
    assert not write.passed and not repo.exists()
