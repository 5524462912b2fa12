"""The metric interface: a finished conversation and its task in, a value or an explicit failure out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricResult:
    """A score, or the reason there is none. A failure is never a silent 0: `value` is None and `error` says why.

    A metric that legitimately scores 0 (a wrong answer, a failing test) returns value=0.0 with error=None.
    """

    value: float | None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.value is not None

    @staticmethod
    def fail(error: str, **details: Any) -> MetricResult:
        return MetricResult(None, error, dict(details))
