"""The real-server fixture: a server that dies is reported by its exit code, signal and log tail."""

from __future__ import annotations

import subprocess
import sys
import tempfile

from tests.servers import RunningServer


def test_a_server_killed_by_sigsegv_reports_its_signal_and_log_tail() -> None:
    script = "import os, signal; print('model loaded; serving', flush=True); os.kill(os.getpid(), signal.SIGSEGV)"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT)

        def tail() -> str:
            log.seek(0)
            return log.read().decode()

        server = RunningServer("llama_cpp.server", proc, tail)
        proc.wait(timeout=30)

        report = server.death()

    assert report is not None
    assert report.startswith(f"llama_cpp.server (pid {proc.pid}) died with exit code -11 (SIGSEGV)")
    assert report.endswith("model loaded; serving\n")


def test_a_running_server_has_no_death_report() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert RunningServer("s", proc, lambda: "").death() is None
    finally:
        proc.kill()
        proc.wait()
