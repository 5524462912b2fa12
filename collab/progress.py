"""One progress display for long stages: items done, ETA, and the backends' calls, tokens, cache hits and cost."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from collab.backends.base import Backend


def usage_line(backends: list[Backend]) -> str:
    seen: set[int] = set()
    calls = requests = tokens = hits = failures = 0
    cost = 0.0
    for b in backends:
        if id(b) in seen:
            continue
        seen.add(id(b))
        s = b.stats
        calls, requests, hits, failures = calls + s.calls, requests + s.requests, hits + s.cache_hits, failures + s.failures
        tokens += s.prompt_tokens + s.completion_tokens
        cost += s.cost_usd
    text = f"calls {calls} · requests {requests} · tokens {tokens:,} · cache hits {hits}"
    if failures:
        text += f" · failed {failures}"
    if cost:
        text += f" · ${cost:.2f}"
    return text


@contextmanager
def stage_progress(description: str, total: int, backends: list[Backend],
                   unit: str = "conversations") -> Iterator["StageProgress"]:
    # In a terminal: a live bar. In a log file (Slurm, CI): a plain line at most every 30 s, and at the end.
    interactive = sys.stdout.isatty()
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        disable=not interactive,
    )
    with progress:
        task_id = progress.add_task(description, total=total, extra="")
        tracker = StageProgress(progress, task_id, backends, log_every_s=None if interactive else 30.0, unit=unit)
        yield tracker
        tracker.log(force=True)


class StageProgress:
    def __init__(self, progress: Progress, task_id: int, backends: list[Backend], log_every_s: float | None,
                 unit: str = "items") -> None:
        self.progress, self.task_id, self.backends = progress, task_id, backends
        self.unit, self.done = unit, 0
        self.log_every_s = log_every_s
        self.started = self.last_log = time.monotonic()

    def update(self, *, advance: int = 0, note: str = "") -> None:
        self.done += advance
        minutes = max(time.monotonic() - self.started, 1e-9) / 60
        rate = f"{self.done / minutes:.1f} {self.unit}/min" if self.done else ""
        extra = " · ".join(p for p in (note, rate, usage_line(self.backends)) if p)
        self.progress.update(self.task_id, advance=advance, extra=extra)
        self.log()

    def log(self, force: bool = False) -> None:
        if self.log_every_s is None or (not force and time.monotonic() - self.last_log < self.log_every_s):
            return
        self.last_log = time.monotonic()
        task = self.progress.tasks[0]
        print(f"[{task.description}] {int(task.completed)}/{int(task.total or 0)} · {task.fields['extra']} · "
              f"{self.last_log - self.started:.0f} s", flush=True)
