"""Math accuracy: is the assistant's final answer mathematically equal to the reference?

Equality is decided by math_verify (numbers, fractions, LaTeX, sets, intervals, symbolic expressions), not by string
comparison, so "0.5", "1/2" and "\\frac{1}{2}" are the same answer.

Why the comparison runs in a helper process: math_verify guards itself with `signal.alarm`, which only works in the
main thread, and the reward code calls metrics from worker threads. A thread-based guard is not enough either: an
answer such as `9^{9^{9^9}}` makes sympy compute a gigantic integer in one C call that holds the GIL, so neither a
signal handler nor an asynchronous exception can interrupt it and the calling thread blocks with it (measured: 10+
minutes). So math_verify runs (with its own timeouts off) in a small pool of long-lived helper processes, each
importing sympy once; a comparison that overruns its deadline gets its helper killed and replaced. That costs a
pipe round-trip per answer and works from any thread.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from typing import Any

from collab.metrics.base import MetricResult
from collab.metrics.extract import extract_final_answer
from collab.tasks.record import Task

DEFAULT_TIMEOUT_S = 10.0
_STARTUP_TIMEOUT_S = 120.0  # importing sympy on a loaded machine; not charged to a comparison's timeout
_MAX_IDLE_HELPERS = 4
_HELPER_MEMORY_BYTES = 4 << 30  # a runaway integer fails with MemoryError instead of exhausting the machine

_THOUSANDS = re.compile(r"^\s*-?\d{1,3}(?:,\d{3})+(?:\.\d+)?\s*$")


class ComparisonTimeout(Exception):
    """The comparison did not finish within its deadline (its helper process has been killed)."""


class HelperError(Exception):
    """A helper process could not be started or died mid-request."""


# ---------------------------------------------------------------------------------------------------------------
# The comparison itself (runs inside a helper process)
# ---------------------------------------------------------------------------------------------------------------


def _as_latex(answer: str) -> str:
    """Wrap a bare answer in `$...$` so math_verify reads it as one LaTeX expression ("(1,2)" is an interval, not
    the number 2), and drop thousands separators ("1,234" is 1234, not the pair (1, 234))."""
    text = answer.strip()
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


def _plain(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .$")


def _show(parsed: list[Any]) -> list[str]:
    # str() of a huge sympy object can itself hang; the string form math_verify keeps beside it is enough.
    return [p if isinstance(p, str) else type(p).__name__ for p in parsed]


def compare(gold: str, predicted: str) -> dict[str, Any]:
    """Compare in this process, without timeouts: {"equal", "gold_parsed", "pred_parsed"}. Raises on internal
    math_verify errors. Use `answers_equal` (hard timeout, any thread) unless you are the helper."""
    from math_verify import parse, verify

    gold_parsed = parse(_as_latex(gold), parsing_timeout=None, raise_on_error=True)  # type: ignore[arg-type]
    pred_parsed = parse(_as_latex(predicted), parsing_timeout=None, raise_on_error=True)  # type: ignore[arg-type]
    if not gold_parsed:
        equal = False
    elif not pred_parsed:
        # Not readable as mathematics (a word, say): the exact text still counts.
        equal = _plain(gold) == _plain(predicted)
    else:
        equal = bool(verify(gold_parsed, pred_parsed, timeout_seconds=None, raise_on_error=True))
    return {"equal": equal, "gold_parsed": _show(gold_parsed), "pred_parsed": _show(pred_parsed)}


def _serve() -> None:
    """Helper main loop: one JSON request per stdin line, one JSON reply per stdout line, until stdin closes."""
    import logging
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (_HELPER_MEMORY_BYTES, _HELPER_MEMORY_BYTES))
    logging.disable(logging.CRITICAL)  # math_verify warns that its timeouts are off; the parent enforces them
    out = sys.stdout
    import math_verify  # noqa: F401 -- import once, before saying ready

    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            reply: dict[str, Any] = compare(request["gold"], request["predicted"])
        except BaseException as exc:  # noqa: BLE001 -- MemoryError, RecursionError, sympy bugs: all reported
            reply = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ---------------------------------------------------------------------------------------------------------------
# Helper processes (parent side)
# ---------------------------------------------------------------------------------------------------------------


class _Helper:
    """One helper process, used by one thread at a time."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "collab.metrics.accuracy", "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal goes to the trainer, not to the helpers
            )
        except OSError as exc:
            raise HelperError(f"could not start the math_verify helper: {exc}") from exc
        self._buffer = b""
        try:
            ready = self._read(_STARTUP_TIMEOUT_S)
        except ComparisonTimeout as exc:
            self.kill()
            raise HelperError(f"math_verify helper did not start within {_STARTUP_TIMEOUT_S:g}s") from exc
        if not ready.get("ready"):
            self.kill()
            raise HelperError(f"math_verify helper said {ready!r} instead of ready")

    def ask(self, request: dict[str, str], timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise HelperError(f"math_verify helper is gone: {exc}") from exc
        return self._read(timeout_s)

    def _read(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ComparisonTimeout(f"no answer within {timeout_s:g}s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise HelperError(f"math_verify helper exited (code {self.proc.poll()})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError as exc:
            raise HelperError(f"math_verify helper wrote {line[:200]!r}, not a JSON reply") from exc

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class _HelperPool:
    """Idle helpers shared by all threads; a busy pool starts another helper rather than making a thread wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Helper] = []

    def run(self, request: dict[str, str], timeout_s: float) -> dict[str, Any]:
        with self._lock:
            helper = self._idle.pop() if self._idle else None
        if helper is None:
            helper = _Helper()
        try:
            reply = helper.ask(request, timeout_s)
        except BaseException:
            helper.kill()  # a timed-out or broken helper is never reused
            raise
        with self._lock:
            if len(self._idle) < _MAX_IDLE_HELPERS:
                self._idle.append(helper)
                helper = None
        if helper is not None:
            helper.kill()
        return reply

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for helper in idle:
            helper.kill()


_POOL = _HelperPool()
atexit.register(_POOL.close)


def answers_equal(gold: str, predicted: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Compare in a helper process under a hard deadline, from any thread.

    Returns {"equal", "gold_parsed", "pred_parsed"}; raises ComparisonTimeout, HelperError, or RuntimeError for an
    error inside math_verify.
    """
    reply = _POOL.run({"gold": gold, "predicted": predicted}, timeout_s)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply


# ---------------------------------------------------------------------------------------------------------------
# The metric
# ---------------------------------------------------------------------------------------------------------------


def accuracy(task: Task, text: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> MetricResult:
    """1.0 when the final answer in `text` equals `task.answer`, else 0.0.

    No answer in the text is a 0.0 with `details["extracted"] = None` (the model did not answer). A reference
    that cannot be parsed, a math_verify error or a timeout is a failure (value None), never a silent 0.
    """
    if not task.answer.strip():
        return MetricResult.fail(f"task {task.id} has no reference answer")
    extracted = extract_final_answer(text or "")
    if extracted is None:
        return MetricResult(0.0, details={"extracted": None})
    try:
        reply = answers_equal(task.answer, extracted, timeout_s=timeout_s)
    except ComparisonTimeout as exc:
        return MetricResult.fail(f"math_verify timed out: {exc}", extracted=extracted)
    except (HelperError, RuntimeError) as exc:
        return MetricResult.fail(f"math_verify failed: {exc}", extracted=extracted)
    if not reply["gold_parsed"]:
        return MetricResult.fail(f"reference answer {task.answer!r} could not be parsed", extracted=extracted)
    details = {"extracted": extracted, "gold_parsed": reply["gold_parsed"], "pred_parsed": reply["pred_parsed"]}
    return MetricResult(1.0 if reply["equal"] else 0.0, details=details)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
