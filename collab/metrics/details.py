"""Detail success: does a message carry every detail the user needs in it (message tasks).

A message task (a reminder, an invitation, a note) succeeds when its final reply contains each required detail in
one of its accepted spellings. Matching ignores case and runs of whitespace and needs word boundaries, so "Ana" is
not found in "Banana" and "3 pm" is not found in "13 pm". The value is 1.0 when every detail is present and 0.0
otherwise: a reminder with the wrong day is a failed reminder, however many other details it got right. The share
of details found is kept in the details as `recall`, for diagnosis.
"""

from __future__ import annotations

import re

from collab.metrics.base import MetricResult
from collab.tasks.record import Task


def _pattern(spelling: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in spelling.split()]
    return re.compile(r"(?<![\w])" + r"\s+".join(words) + r"(?![\w])", re.IGNORECASE)


def detail_present(spellings: tuple[str, ...], text: str) -> bool:
    """True when `text` contains any of `spellings` as whole words."""
    return any(_pattern(s).search(text) for s in spellings)


def detail_success(task: Task, text: str) -> MetricResult:
    """1.0 when `text` contains every detail of `task.required`, else 0.0; a task without details cannot be scored."""
    if not task.required:
        return MetricResult.fail(f"task {task.id} has no required details to check")
    found = [detail_present(spellings, text) for spellings in task.required]
    return MetricResult(
        float(all(found)),
        details={"recall": sum(found) / len(found), "missing": [s[0] for s, ok in zip(task.required, found) if not ok]},
    )
