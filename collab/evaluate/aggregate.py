"""From scored conversation rows to per-model estimates and paired model comparisons.

Two levels, both explicit about what they leave out:
  1. per task: the runs of a task are averaged into one row (or, for aptitude and unreliability, reduced to the
     90th percentile / the 90th-10th spread over runs). A failed conversation is excluded from every metric; a
     failed metric is excluded from that metric; both are counted under `meta.failures`. A task with no usable run
     is absent, so `n` (the number of tasks behind an estimate) shows what was dropped.
  2. over tasks: the statistic and its percentile-bootstrap CI (collab.evaluate.bootstrap), resampling tasks.

Metric definitions (every rate is a share in [0, 1]):
  task_score             task metric (score_response) on the final artifact (the last answer attempt; 0 when the
                         assistant never attempted an answer).
  task_score_underspecified, task_score_complete
                         task_score on the tasks with needs_clarification / on the others.
  elicited_rate          tasks with withheld facts: the share of them that the assistant's questions obtained.
  mr                     conversation-level R* (task + token term + interactivity), when a reward is configured.
  ask_rate               tasks with needs_clarification: the assistant asked before its first pure answer.
  over_ask_rate          tasks without needs_clarification: the assistant asked anyway.
  action_accuracy        first assistant turn: asked (ask, or ask-and-answer) exactly when needs_clarification.
  action_macro_f1        macro-F1 of that ask / answer decision over the two classes (a class never gold nor
                         predicted leaves the average).
  premature_answer_rate  tasks with withheld information (facts, or needs_clarification): an answer attempt came
                         before all of it was available.
  turns                  assistant turns per conversation.
  tokens                 assistant tokens per conversation (the policy's tokenizer).
  <metric>_aptitude      (runs > 1) mean over tasks of the 90th percentile of the metric over a task's runs.
  <metric>_unreliability (runs > 1) mean over tasks of the 90th minus the 10th percentile over its runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from collab.evaluate.bootstrap import (
    Statistic,
    bootstrap_difference,
    bootstrap_estimate,
    macro_f1_statistic,
    mean_statistic,
)

if TYPE_CHECKING:
    from collab.evaluate.runner import EvalSettings
    from collab.tasks.record import Task

Row = dict[str, Any]
Value = float | list[float] | None
"""A conversation's value for a metric; None is a metric failure."""

ASKING_ACTS = ("ask", "ask_and_answer")


@dataclass(frozen=True)
class MetricSpec:
    """How one metric reads a conversation row and reduces over runs and tasks.

    Attributes:
        name: Key in results.json.
        applies: Which (non-failed) conversations the metric is about; the others are not counted at all.
        value: The conversation's value; None when its metric failed (counted as a failure).
        statistic: How per-task rows become one number (mean, or macro-F1 of confusion cells).
        label: Short description for reports.
        percentile: For aptitude / unreliability: the per-task reduction over runs ("p90" or "p90-p10").
    """

    name: str
    applies: Callable[[Row], bool]
    value: Callable[[Row], Value]
    statistic: Statistic = mean_statistic
    label: str = ""
    percentile: str | None = None


def _score(key: str) -> Callable[[Row], Value]:
    def read(row: Row) -> Value:
        value = row["scores"].get(key)
        return None if value is None else float(value)

    return read


def _asked_first(row: Row) -> bool:
    return row["scores"].get("first_action") in ASKING_ACTS


def _action_correct(row: Row) -> Value:
    if row["scores"].get("first_action", "none") == "none":
        return None
    return float(_asked_first(row) == bool(row["needs_clarification"]))


def _action_cells(row: Row) -> Value:
    """One-hot confusion cell [ask/ask, ask/answer, answer/ask, answer/answer] (gold/predicted)."""
    if row["scores"].get("first_action", "none") == "none":
        return None
    gold, predicted = bool(row["needs_clarification"]), _asked_first(row)
    cells = [0.0, 0.0, 0.0, 0.0]
    cells[(0 if gold else 2) + (0 if predicted else 1)] = 1.0
    return cells


def _always(row: Row) -> bool:
    return True


def _facts_outstanding(row: Row) -> bool:
    """The task withheld facts from its opening: its elicited share is defined (or failed, and counts as failed)."""
    return bool(row.get("n_facts")) and (row["scores"].get("elicited") is not None or "elicited" in row["errors"])


def _withheld(row: Row) -> bool:
    return bool(row.get("n_facts")) or bool(row["needs_clarification"])


BASE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("task_score", _always, _score("task_score"), label="task metric on the final artifact"),
    MetricSpec("task_score_underspecified", lambda r: bool(r["needs_clarification"]), _score("task_score"),
               label="task metric | needs clarification"),
    MetricSpec("task_score_complete", lambda r: not r["needs_clarification"], _score("task_score"),
               label="task metric | complete task"),
    MetricSpec("elicited_rate", _facts_outstanding, _score("elicited"),
               label="withheld facts obtained by questions"),
    MetricSpec("ask_rate", lambda r: bool(r["needs_clarification"]), _score("asked"),
               label="asked | needs clarification"),
    MetricSpec("over_ask_rate", lambda r: not r["needs_clarification"], _score("asked"), label="asked | complete task"),
    MetricSpec("action_accuracy", _always, _action_correct, label="first turn ask/answer correct"),
    MetricSpec("action_macro_f1", _always, _action_cells, macro_f1_statistic,
               label="macro-F1 of first-turn ask/answer"),
    MetricSpec("premature_answer_rate", _withheld, _score("premature_answer"), label="answered before all information"),
    MetricSpec("turns", _always, _score("turns"), label="assistant turns"),
    MetricSpec("tokens", _always, _score("tokens"), label="assistant tokens"),
)
MR_METRIC = MetricSpec("mr", _always, _score("mr"), label="conversation-level R*")
RATE_METRICS = frozenset({"task_score", "task_score_underspecified", "task_score_complete", "elicited_rate",
                          "ask_rate", "over_ask_rate", "action_accuracy", "action_macro_f1", "premature_answer_rate"})


def _spread_metrics(base: MetricSpec) -> tuple[MetricSpec, MetricSpec]:
    return (
        MetricSpec(f"{base.name}_aptitude", base.applies, base.value, label=f"90th pct of {base.name} over runs",
                   percentile="p90"),
        MetricSpec(f"{base.name}_unreliability", base.applies, base.value,
                   label=f"90th - 10th pct of {base.name} over runs", percentile="p90-p10"),
    )


def metric_specs(*, runs: int, with_mr: bool) -> list[MetricSpec]:
    """The metrics reported for an evaluation: the base set, mr when a reward is configured, and aptitude /
    unreliability of the scores when there is more than one run per task."""
    specs = list(BASE_METRICS)
    scored = [BASE_METRICS[0]]
    if with_mr:
        specs.insert(1, MR_METRIC)
        scored.append(MR_METRIC)
    if runs > 1:
        for base in scored:
            specs.extend(_spread_metrics(base))
    return specs


@dataclass
class Failures:
    """What was left out of a model's estimates, and why."""

    conversations: int = 0
    total: int = 0
    reasons: dict[str, int] | None = None
    metrics: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversations_failed": self.conversations,
            "conversations_total": self.total,
            "reasons": dict(self.reasons or {}),
            "metric_failures": dict(self.metrics or {}),
        }


def per_task_rows(rows: Sequence[Row], spec: MetricSpec) -> tuple[dict[str, np.ndarray], int]:
    """Task id -> the task's row for `spec` (runs reduced), and the number of metric failures. Failed
    conversations are skipped here (they are counted once, per model)."""
    values: dict[str, list[Any]] = defaultdict(list)
    failures = 0
    for row in rows:
        if row.get("failed") or not spec.applies(row):
            continue
        value = spec.value(row)
        if value is None:
            failures += 1
            continue
        values[row["task_id"]].append(value)
    reduced: dict[str, np.ndarray] = {}
    for task_id, runs in values.items():
        data = np.asarray(runs, dtype=float)
        if spec.percentile is None:
            reduced[task_id] = np.atleast_1d(data.mean(axis=0))
        elif len(data) >= 2:  # a spread over one run is meaningless; the task is left out (n shows it)
            p10, p90 = np.percentile(data, [10, 90])
            reduced[task_id] = np.array([p90 if spec.percentile == "p90" else p90 - p10])
    return reduced, failures


def _failure_reason(text: str) -> str:
    return text.split(":")[0][:60] if text else "unknown"


def aggregate(
    rows: Sequence[Row],
    models: Sequence[str],
    *,
    tasks: Sequence[Task] | None = None,
    settings: EvalSettings | None = None,
    runs: int | None = None,
    with_mr: bool | None = None,
    resamples: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """results.json content: per-model estimates, pairwise comparisons ("B vs A" = B minus A, for every model B
    named after A) and meta (settings, task counts, failures)."""
    runs = runs if runs is not None else settings.runs if settings is not None else 1
    with_mr = with_mr if with_mr is not None else bool(settings is not None and settings.reward is not None)
    resamples = resamples if resamples is not None else settings.resamples if settings is not None else 2000
    seed = seed if seed is not None else settings.seed if settings is not None else 0
    specs = metric_specs(runs=runs, with_mr=with_mr)
    by_model: dict[str, list[Row]] = {m: [] for m in models}
    for row in rows:
        if row["model"] in by_model:
            by_model[row["model"]].append(row)

    per_task: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    results: dict[str, Any] = {"models": {}, "comparisons": {}}
    failures: dict[str, Any] = {}
    for model in models:
        model_rows = by_model[model]
        failed = [r for r in model_rows if r.get("failed")]
        reasons: dict[str, int] = defaultdict(int)
        for r in failed:
            reasons[_failure_reason(str(r["failed"]))] += 1
        metric_failures: dict[str, int] = {}
        per_task[model] = {}
        estimates: dict[str, Any] = {}
        for spec in specs:
            table, n_failed = per_task_rows(model_rows, spec)
            per_task[model][spec.name] = table
            if n_failed and spec.percentile is None:
                metric_failures[spec.name] = n_failed
            data = np.stack([table[t] for t in sorted(table)]) if table else np.zeros((0, 1))
            estimates[spec.name] = bootstrap_estimate(data, spec.statistic, resamples=resamples, seed=seed).to_dict()
        results["models"][model] = estimates
        failures[model] = Failures(len(failed), len(model_rows), dict(reasons), metric_failures).to_dict()

    for i, first in enumerate(models):
        for second in models[i + 1 :]:
            key = f"{second} vs {first}"
            results["comparisons"][key] = {}
            for spec in specs:
                a, b = per_task[second][spec.name], per_task[first][spec.name]
                shared = sorted(set(a) & set(b))
                da = np.stack([a[t] for t in shared]) if shared else np.zeros((0, 1))
                db = np.stack([b[t] for t in shared]) if shared else np.zeros((0, 1))
                diff = bootstrap_difference(da, db, spec.statistic, resamples=resamples, seed=seed)
                results["comparisons"][key][spec.name] = diff.to_dict()

    meta: dict[str, Any] = {
        "metrics": {s.name: s.label for s in specs},
        "failures": failures,
        "confidence": 0.95,
        "resamples": resamples,
        "runs": runs,
    }
    if tasks is not None:
        meta["tasks"] = {
            "count": len(tasks),
            "needs_clarification": sum(1 for t in tasks if t.needs_clarification),
            "complete": sum(1 for t in tasks if not t.needs_clarification),
        }
    if settings is not None:
        meta["settings"] = settings.meta()
    results["meta"] = meta
    return results
