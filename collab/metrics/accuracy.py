"""Math accuracy: is the assistant's final answer mathematically equal to the reference?

Equality is decided by math_verify (numbers, fractions, LaTeX, sets, intervals, symbolic expressions), not by string
comparison, so "0.5", "1/2" and "\\frac{1}{2}" are the same answer.

math_verify guards its own work with `signal.alarm`, which only works in the main thread; the reward code calls
metrics from worker threads. So math_verify's timeouts are switched off and the whole comparison instead runs in a
short-lived daemon thread that is interrupted with an asynchronous exception when it overruns (the same mechanism
as a signal handler: delivered between bytecodes). A comparison stuck inside one long C call (a gigantic integer
power) cannot be interrupted by either mechanism; the caller still gets its answer on time, and the stray thread
dies as soon as the C call returns.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from collab.metrics.base import MetricResult
from collab.metrics.extract import extract_final_answer
from collab.tasks.record import Task

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0

_THOUSANDS = re.compile(r"^\s*-?\d{1,3}(?:,\d{3})+(?:\.\d+)?\s*$")


class ComparisonTimeout(Exception):
    """Raised inside the worker thread to stop an overrunning comparison."""


def _silence_math_verify_timeout_warning() -> None:
    # math_verify warns once that timeouts are off "and you must provide your own": we do (see module docstring).
    for name in ("math_verify.parser", "math_verify.grader"):
        try:
            module = __import__(name, fromlist=["TIMEOUT_WARNING_SHOWN"])
            module.TIMEOUT_WARNING_SHOWN = True
        except ImportError:
            pass
    logging.getLogger("math_verify").setLevel(logging.ERROR)


def run_with_timeout(fn: Callable[[], T], timeout_s: float) -> T:
    """Run `fn` in a daemon thread and return its result; raise ComparisonTimeout after `timeout_s` seconds.

    Works from any thread (no signals). On timeout the worker is sent ComparisonTimeout asynchronously and
    abandoned; it is a daemon, so it never blocks interpreter exit.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except ComparisonTimeout:
            outcome["timeout"] = True
        except BaseException as exc:  # noqa: BLE001 -- handed back to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="math-verify", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        if worker.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(ComparisonTimeout))
        raise ComparisonTimeout(f"comparison took longer than {timeout_s:g}s")
    if "error" in outcome:
        raise outcome["error"]
    if outcome.get("timeout"):
        raise ComparisonTimeout(f"comparison took longer than {timeout_s:g}s")
    return outcome["value"]


def _as_latex(answer: str) -> str:
    """Wrap a bare answer in `$...$` so math_verify reads it as one LaTeX expression ("(1,2)" is an interval, not
    the number 2), and drop thousands separators ("1,234" is 1234, not the pair (1, 234))."""
    text = answer.strip()
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


def _compare(gold: str, predicted: str) -> tuple[bool, list[Any], list[Any]]:
    from math_verify import parse, verify

    gold_parsed = parse(_as_latex(gold), parsing_timeout=None, raise_on_error=True)  # type: ignore[arg-type]
    pred_parsed = parse(_as_latex(predicted), parsing_timeout=None, raise_on_error=True)  # type: ignore[arg-type]
    if not gold_parsed:
        return False, gold_parsed, pred_parsed
    if not pred_parsed:
        # Not parseable as mathematics (e.g. a word): exact text is still a match.
        return _plain(gold) == _plain(predicted), gold_parsed, pred_parsed
    equal = verify(gold_parsed, pred_parsed, timeout_seconds=None, raise_on_error=True)
    return bool(equal), gold_parsed, pred_parsed


def _plain(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .$")


def accuracy(task: Task, text: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> MetricResult:
    """1.0 when the final answer in `text` equals `task.answer`, else 0.0.

    No answer in the text is a 0.0 with `details["extracted"] = None` (the model did not answer). A reference
    that cannot be parsed, a math_verify crash or a timeout is a failure (value None), never a silent 0.
    """
    if not task.answer.strip():
        return MetricResult.fail(f"task {task.id} has no reference answer")
    extracted = extract_final_answer(text or "")
    if extracted is None:
        return MetricResult(0.0, details={"extracted": None})
    _silence_math_verify_timeout_warning()
    try:
        equal, gold_parsed, pred_parsed = run_with_timeout(lambda: _compare(task.answer, extracted), timeout_s)
    except ComparisonTimeout as exc:
        return MetricResult.fail(f"math_verify timed out: {exc}", extracted=extracted)
    except Exception as exc:  # noqa: BLE001 -- any internal error is a metric failure, reported
        return MetricResult.fail(f"math_verify failed: {type(exc).__name__}: {exc}", extracted=extracted)
    if not gold_parsed:
        return MetricResult.fail(f"reference answer {task.answer!r} could not be parsed", extracted=extracted)
    details = {"extracted": extracted, "gold_parsed": _show(gold_parsed), "pred_parsed": _show(pred_parsed)}
    return MetricResult(1.0 if equal else 0.0, details=details)


def _show(parsed: list[Any]) -> list[str]:
    # str() of a sympy object can be slow for huge expressions; the string fallback math_verify keeps is enough.
    return [p if isinstance(p, str) else type(p).__name__ for p in parsed]
