"""Percentile-bootstrap confidence intervals over tasks, vectorised with numpy.

Why tasks are the resampling unit: runs of the same task are not independent (same problem, same difficulty), so
every statistic is computed from one row per task (its runs averaged first) and the bootstrap draws tasks with
replacement. A paired comparison draws the same tasks for both models, which removes the between-task variance that
both models share and gives much narrower intervals than two independent ones.

A statistic is a function of the column means of the per-task rows (shape (..., k) -> (...)): the plain mean takes
column 0; macro-F1 takes four confusion-cell columns. Resamples are represented by multinomial count weights, so
one resample costs a matrix product instead of a Python loop.

Small samples are explicit: no task gives mean None; a single task gives its value with no interval (an interval
from one task would claim a certainty the data cannot support).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]
"""Column means of shape (..., k) -> statistic of shape (...); NaN where it is undefined."""

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
_MAX_WEIGHT_CELLS = 4_000_000
"""Largest resample-weight block held at once (resamples x tasks), so thousands of tasks stay within memory."""


def mean_statistic(column_means: np.ndarray) -> np.ndarray:
    """The mean of the per-task values (column 0)."""
    return column_means[..., 0]


def macro_f1_statistic(column_means: np.ndarray) -> np.ndarray:
    """Macro-F1 of ask vs answer from confusion columns [ask/ask, ask/answer, answer/ask, answer/answer]
    (gold/predicted). A class that is neither gold nor predicted anywhere has no F1 and leaves the average; with
    neither class defined the result is NaN."""
    tp, fn, fp, tn = (column_means[..., i] for i in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_ask = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        f1_answer = np.where(2 * tn + fn + fp > 0, 2 * tn / (2 * tn + fn + fp), np.nan)
        stacked = np.stack([f1_ask, f1_answer])
        defined = np.sum(~np.isnan(stacked), axis=0)
        total = np.nansum(stacked, axis=0)
        return np.where(defined > 0, total / np.maximum(defined, 1), np.nan)


@dataclass(frozen=True)
class Estimate:
    """A statistic with its percentile-bootstrap interval. `n` is the number of tasks it rests on."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


@dataclass(frozen=True)
class Difference:
    """A paired difference (first minus second) with its interval; `n` is the number of shared tasks."""

    diff: float | None
    ci_low: float | None
    ci_high: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"diff": self.diff, "ci_low": self.ci_low, "ci_high": self.ci_high}


def _as_rows(values: Any) -> np.ndarray:
    data = np.asarray(values, dtype=float)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise ValueError(f"expected one row per task, got an array of shape {data.shape}")
    return data


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def resampled_statistics(
    datasets: list[np.ndarray],
    statistic: Statistic,
    combine: Callable[[list[np.ndarray]], np.ndarray],
    *,
    resamples: int,
    seed: int,
) -> np.ndarray:
    """`combine([statistic(resampled mean of each dataset)])` for `resamples` task resamples shared by all datasets
    (they must have the same rows in the same task order)."""
    n = datasets[0].shape[0]
    rng = np.random.default_rng(seed)
    block = max(1, _MAX_WEIGHT_CELLS // max(n, 1))
    out = []
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)  # (size, n) draw counts
        out.append(combine([statistic(weights @ data / n) for data in datasets]))
    return np.concatenate(out)


def _interval(stats: np.ndarray, level: float) -> tuple[float | None, float | None]:
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return None, None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_estimate(
    values: Any,
    statistic: Statistic = mean_statistic,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Estimate:
    """The statistic of the per-task rows `values` (shape (n,) or (n, k)) and its percentile-bootstrap CI."""
    data = _as_rows(values) if len(values) else np.zeros((0, 1))
    n = data.shape[0]
    if n == 0:
        return Estimate(None, None, None, 0)
    point = _finite(float(statistic(data.mean(axis=0))))
    if n == 1 or point is None:
        return Estimate(point, None, None, n)
    stats = resampled_statistics([data], statistic, lambda s: s[0], resamples=resamples, seed=seed)
    low, high = _interval(stats, level)
    return Estimate(point, low, high, n)


def bootstrap_difference(
    first: Any,
    second: Any,
    statistic: Statistic = mean_statistic,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Difference:
    """statistic(first) - statistic(second) over paired per-task rows (row i of both is the same task), with a CI
    from resampling tasks jointly."""
    a = _as_rows(first) if len(first) else np.zeros((0, 1))
    b = _as_rows(second) if len(second) else np.zeros((0, 1))
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"paired rows differ in length: {a.shape[0]} vs {b.shape[0]}")
    n = a.shape[0]
    if n == 0:
        return Difference(None, None, None, 0)
    point = _finite(float(statistic(a.mean(axis=0)) - statistic(b.mean(axis=0))))
    if n == 1 or point is None:
        return Difference(point, None, None, n)
    stats = resampled_statistics([a, b], statistic, lambda s: s[0] - s[1], resamples=resamples, seed=seed)
    low, high = _interval(stats, level)
    return Difference(point, low, high, n)
