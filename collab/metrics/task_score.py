"""The task metric of a reply, chosen by the task's kind, and the correct/incorrect verdict built on it."""

from __future__ import annotations

from collections.abc import Callable

from collab.metrics.accuracy import accuracy
from collab.metrics.base import MetricResult
from collab.metrics.bleu import bleu
from collab.metrics.details import detail_success
from collab.metrics.pass_rate import pass_rate
from collab.metrics.qa_f1 import qa_f1
from collab.tasks.record import Task

TASK_METRIC_NAMES: dict[str, str] = {
    "math": "accuracy", "code": "pass_rate", "qa": "qa_f1", "doc": "bleu", "message": "detail_success"
}

_METRICS: dict[str, Callable[[Task, str], MetricResult]] = {
    "math": accuracy,
    "code": pass_rate,
    "qa": qa_f1,
    "doc": bleu,
    "message": detail_success,
}

DEFAULT_BLEU_THRESHOLD = 0.5
"""A convention, not a standard: a document counts as correct when its BLEU reaches this. Tune per task set."""


class MetricFailure(RuntimeError):
    """The task metric could not score the reply, so it is neither correct nor incorrect."""


def score_response(task: Task, text: str) -> MetricResult:
    """Score `text` with the metric of `task.kind`. An exception inside a metric becomes a failure result."""
    metric = _METRICS.get(task.kind)
    if metric is None:
        return MetricResult.fail(f"no task metric for kind {task.kind!r}")
    try:
        result = metric(task, text)
    except Exception as exc:  # noqa: BLE001 -- reported, never a silent 0
        return MetricResult.fail(f"{TASK_METRIC_NAMES[task.kind]} raised {type(exc).__name__}: {exc}")
    return MetricResult(result.value, result.error, {"metric": TASK_METRIC_NAMES[task.kind], **result.details})


def result_is_correct(task: Task, result: MetricResult, *, bleu_threshold: float = DEFAULT_BLEU_THRESHOLD) -> bool:
    """Correctness from an existing score: full marks for math and code, exact match for QA, BLEU at or above
    `bleu_threshold` for documents. Raises MetricFailure for a failed result."""
    if result.value is None:
        raise MetricFailure(result.error or "the task metric failed")
    if task.kind == "qa":
        return float(result.details.get("exact_match", 0.0)) >= 0.999
    if task.kind == "doc":
        return result.value >= bleu_threshold
    return result.value >= 0.999


def is_correct(task: Task, text: str, *, bleu_threshold: float = DEFAULT_BLEU_THRESHOLD) -> bool:
    """Whether `text` solves `task` (see `result_is_correct`). Raises MetricFailure when it cannot be scored."""
    return result_is_correct(task, score_response(task, text), bleu_threshold=bleu_threshold)
