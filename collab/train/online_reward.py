"""The MR reward function that TRL's online trainers call, with its per-step breakdown and sample log.

TRL calls the function once per generation batch with every sampled completion of this process (`prompts`,
`completions`, `completion_ids`, the dataset columns such as `task_id`, and `trainer_state`). It scores all of them
in ONE `MultiturnReward.score` call, so every rollout of every completion advances together through the batched
engine (one simulator call and one policy call per engine step), and returns one MR per completion:

- a completion that hit the token limit (no stop token among its `completion_ids`) gets `reward.truncation_penalty`
  without rollouts;
- a completion whose MR failed (every rollout failed) is returned as None and counted (`mr/failed`), never turned
  into 0 here; the trainer leaves it out of the loss (collab.train.online_mask, which also skips ties);
- the future assistant turns come from the live policy (`collab.train.online_policy`) at the current step's weights:
  `set_revision(global_step)` is called before every score.

`MRRewardFunction` is synchronous (online DPO calls its reward functions synchronously); `AsyncMRRewardFunction` is
the same work behind `async def`, run in a worker thread (GRPO and RLOO await async reward functions on their own
event loop, which a blocking call would stall).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collab.reward import Candidate, MRResult, MultiturnReward
from collab.seeding import stable_seed
from collab.tasks.record import Task
from collab.train.online_data import transcript
from collab.train.online_policy import LivePolicy

BEHAVIOUR = ("task", "tokens", "interactivity")


# --- the per-step breakdown --------------------------------------------------------------------------------------


@dataclass
class BreakdownTotals:
    """Sums and counts since the last log, mergeable across processes."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, value: float, count: int = 1) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0) + count

    def merge(self, other: BreakdownTotals) -> None:
        for key, value in other.sums.items():
            self.add(key, value, other.counts.get(key, 0))

    def mean(self, key: str) -> float | None:
        n = self.counts.get(key, 0)
        return self.sums[key] / n if n else None


def record_batch(totals: BreakdownTotals, candidates: list[Candidate], results: list[MRResult], seconds: float) -> None:
    """Add one scored batch to the totals."""
    totals.add("calls", 1.0)
    totals.add("seconds", seconds)
    for cand, result in zip(candidates, results):
        totals.add("candidates", 1.0)
        totals.add("truncated", float(cand.truncated))
        totals.add("failed", float(result.mr is None))
        totals.add("failed_rollouts", float(result.failed_rollouts))
        totals.add("rollouts", float(len(result.rollouts)))
        if result.mr is None:
            continue
        totals.add("mr", result.mr)
        totals.add("mr_sq", result.mr * result.mr)
        if cand.truncated:
            continue
        for key in BEHAVIOUR:
            if key in result.components:
                totals.add(key, result.components[key])
        asked = result.components.get("asked")
        if asked is not None:
            totals.add("asked", asked)
            totals.add("ask_needed" if cand.task.needs_clarification else "over_ask", asked)


def breakdown_metrics(totals: BreakdownTotals) -> dict[str, float]:
    """The logged metrics (`mr/...`) of the totals; a metric with nothing to average is left out."""
    out: dict[str, float] = {}
    n = totals.sums.get("candidates", 0.0)
    if not n:
        return out
    mean = totals.mean("mr")
    if mean is not None:
        out["mr/mean"] = mean
        out["mr/std"] = math.sqrt(max(0.0, (totals.mean("mr_sq") or 0.0) - mean * mean))
    for key in (*BEHAVIOUR, "asked"):
        value = totals.mean(key)
        if value is not None:
            out[f"mr/{key}"] = value
    for key, name in (("ask_needed", "mr/ask_rate"), ("over_ask", "mr/over_ask_rate")):
        value = totals.mean(key)
        if value is not None:
            out[name] = value
    out["mr/candidates"] = n
    out["mr/truncated_rate"] = totals.sums.get("truncated", 0.0) / n
    out["mr/failed"] = totals.sums.get("failed", 0.0)
    out["mr/failed_rate"] = totals.sums.get("failed", 0.0) / n
    out["mr/rollouts"] = totals.sums.get("rollouts", 0.0)
    out["mr/failed_rollouts"] = totals.sums.get("failed_rollouts", 0.0)
    out["mr/seconds"] = totals.sums.get("seconds", 0.0) / max(1, totals.counts.get("seconds", 1))
    # What the trainer's mask left out of the loss (collab.train.online_mask), where it ran.
    for unit in ("pairs", "groups"):
        for what in ("skipped_failed", "skipped_tied", "trained"):
            if f"{unit}_{what}" in totals.sums:
                out[f"mr/{unit}_{what}"] = totals.sums[f"{unit}_{what}"]
    return out


# --- the sample log ----------------------------------------------------------------------------------------------


class SampleLog:
    """Sample conversations every `every` steps: appended to `path` (JSONL) and, when a W&B run is open, logged as
    the `mr/samples` table. The first call at or after each multiple of `every` logs (generation may skip steps;
    a resumed launch continues with the next multiple)."""

    COLUMNS = ("step", "task_id", "prompt", "completion", "truncated", "mr", "task", "interactivity", "asked",
               "error", "rollout")

    def __init__(self, path: Path, every: int, limit: int = 16) -> None:
        self.path, self.every, self.limit = path, every, limit
        self.next_step: int | None = None

    def due(self, step: int) -> bool:
        if self.next_step is None:
            self.next_step = -(-step // self.every) * self.every  # the first multiple of `every` at or after step
        return step >= self.next_step

    def write(self, step: int, candidates: list[Candidate], results: list[MRResult]) -> list[dict[str, Any]]:
        self.next_step = (step // self.every + 1) * self.every
        rows = [sample_row(step, c, r) for c, r in list(zip(candidates, results))[: self.limit]]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self._log_table(rows)
        return rows

    def _log_table(self, rows: list[dict[str, Any]]) -> None:
        try:
            import wandb
        except ImportError:  # pragma: no cover - wandb is a dependency
            return
        if wandb.run is None:
            return
        data = [[row["step"], row["task_id"], _text(row["prompt"]), row["completion"], row["truncated"], row["mr"],
                 row["components"].get("task"), row["components"].get("interactivity"),
                 row["components"].get("asked"), row["error"], _text(row["rollouts"][0] if row["rollouts"] else [])]
                for row in rows]
        wandb.run.log({"mr/samples": wandb.Table(columns=list(self.COLUMNS), data=data),
                       "train/global_step": rows[0]["step"] if rows else 0})


def sample_row(step: int, cand: Candidate, result: MRResult) -> dict[str, Any]:
    return {"step": step, "task_id": cand.task.id, "prompt": cand.history, "completion": cand.text,
            "truncated": cand.truncated, "mr": result.mr, "std": result.std, "components": result.components,
            "error": result.error, "rollouts": [r.messages for r in result.rollouts],
            "rollout_rewards": [r.reward for r in result.rollouts]}


def _text(messages: Any) -> str:
    return "\n".join(f"[{m['role']}] {m['content']}" for m in messages) if isinstance(messages, list) else ""


# --- the reward function -----------------------------------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """A TRL completion (conversational: a list with one assistant message; plain: a string) as text."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def is_truncated(ids: Iterable[int], stop_ids: set[int]) -> bool:
    """A completion hit the token limit when no stop token (EOS / end of turn) is among its ids."""
    return not any(t in stop_ids for t in ids)


class MRRewardFunction:
    """MR of every completion TRL sampled (see the module docstring). Usable once `attach` gave it the reward."""

    def __init__(self, *, tasks: dict[str, Task], seed: int = 0, rank: int = 0,
                 samples: SampleLog | None = None) -> None:
        self.__name__ = "mr"  # TRL names the reward by it: rewards/mr/mean
        self.tasks = tasks
        self.seed = seed
        self.rank = rank
        self.samples = samples
        self.reward: MultiturnReward | None = None
        self.policy: LivePolicy | None = None
        self.stop_ids: set[int] = set()
        self.totals = BreakdownTotals()
        self.calls = 0
        # What the last call returned, failures as None: TRL turns them into NaN or 0, the trainer's mask needs them.
        self.last_rewards: list[float | None] = []

    def attach(self, reward: MultiturnReward, policy: LivePolicy, stop_ids: Iterable[int]) -> None:
        self.reward, self.policy = reward, policy
        self.stop_ids = {int(i) for i in stop_ids if i is not None}

    def candidates(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]],
                   task_ids: list[str]) -> list[Candidate]:
        out = []
        for prompt, completion, ids, task_id in zip(prompts, completions, completion_ids, task_ids):
            task = self.tasks.get(task_id)
            if task is None:
                raise KeyError(f"task {task_id!r} of a training prompt is not in the recipe's task set")
            out.append(Candidate(task, transcript(prompt), completion_text(completion).strip(),
                                 truncated=is_truncated(ids, self.stop_ids)))
        return out

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], *,
                 task_id: list[str], trainer_state: Any = None, **_: Any) -> list[float | None]:
        if self.reward is None or self.policy is None:
            raise RuntimeError("MRRewardFunction.attach() was not called")
        step = int(getattr(trainer_state, "global_step", 0) or 0)
        candidates = self.candidates(prompts, completions, completion_ids, task_id)
        started = time.perf_counter()
        with self.policy.session(step):
            results = self.reward.score(candidates, seed=stable_seed(self.seed, step, self.rank, self.calls))
        record_batch(self.totals, candidates, results, time.perf_counter() - started)
        self.calls += 1
        if self.samples is not None and self.samples.due(step):
            self.samples.write(step, candidates, results)
        self.last_rewards = [r.mr for r in results]
        return list(self.last_rewards)

    def drain(self, gather: Callable[[BreakdownTotals], list[BreakdownTotals]] | None = None) -> dict[str, float]:
        """The breakdown since the last drain (merged over processes by `gather`, a collective every rank calls)."""
        totals, self.totals = self.totals, BreakdownTotals()
        if gather is not None:
            merged = BreakdownTotals()
            for part in gather(totals):
                merged.merge(part)
            totals = merged
        return breakdown_metrics(totals)


class AsyncMRRewardFunction(MRRewardFunction):
    """The same reward for GRPO and RLOO, which await async reward functions: the scoring runs in a worker thread
    so that TRL's event loop stays free (generation itself is blocking, batched work)."""

    async def __call__(self, prompts: list[Any], completions: list[Any],  # type: ignore[override]
                       completion_ids: list[list[int]], **kwargs: Any) -> list[float | None]:
        return await asyncio.to_thread(MRRewardFunction.__call__, self, prompts, completions, completion_ids,
                                       **kwargs)
