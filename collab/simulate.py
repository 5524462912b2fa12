"""`collab simulate`: one conversation between the policy and the simulated user, then the MR of a few candidate
first responses with their breakdown. The quickest way to see what a recipe's reward prefers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from collab.backends.base import Backend
from collab.candidates import Strategy, assign_strategies, sample_candidates
from collab.chat import SamplingParams
from collab.config import DataStage, Recipe
from collab.factory import build_policy, build_reward, build_simulator
from collab.progress import usage_line
from collab.reward import Candidate, MRResult
from collab.rollout import ConversationState, RolloutEngine
from collab.tasks.record import Task
from collab.tasks.registry import load_task_set


@dataclass
class SimulationReport:
    task: Task
    conversation: ConversationState
    candidates: list[Candidate]
    scores: list[MRResult]


# The phases of a simulation, shown live (they take from seconds to minutes, most of it in the last one).
PHASES = ("loading the policy", "one conversation", "sampling candidates", "scoring candidates (rollouts)")


def simulate(recipe: Recipe, *, task_index: int = 0, candidates: int = 4, seed: int = 0,
             console: Console | None = None) -> SimulationReport:
    tasks = load_task_set(recipe.tasks.name, split=recipe.tasks.split, limit=recipe.tasks.limit, seed=recipe.tasks.seed)
    task = tasks[task_index % len(tasks)]
    with phase_progress(console) as phase:
        phase(0)
        policy = build_policy(recipe)
        simulator = build_simulator(recipe)
        reward = build_reward(recipe, policy, simulator)
        phase(1, [policy])
        params = SamplingParams(
            max_new_tokens=recipe.reward.policy_max_new_tokens, temperature=recipe.reward.policy_temperature, seed=seed
        )
        engine = RolloutEngine(policy, simulator, params=params, system_prompt=recipe.model.system_prompt)
        conversation = ConversationState(task, [], seed=seed, max_assistant_turns=recipe.simulator.max_turns)
        engine.run([conversation])

        phase(2, [policy])
        opening = simulator.respond([(task, [])], seeds=[seed])[0]
        history = [{"role": "user", "content": opening.text or ""}]
        data_stage = next((s for s in recipe.stages if isinstance(s, DataStage)), None)
        strategies: list[Strategy] = (list(data_stage.strategies) if data_stage
                                      else ["sample", "proactive", "ask", "answer"])
        sampled = sample_candidates(
            policy, [(task, history)], assign_strategies(strategies, candidates), params,
            system_prompt=recipe.model.system_prompt, seed=seed,
            # the data stage's own openings and stop strings, so the candidates shown are the ones it would score
            prefills=data_stage.prefills if data_stage else None, stops=data_stage.stops if data_stage else None,
        )[0]
        phase(3, [policy])
        scores = reward.score(sampled, seed=seed)
        phase(len(PHASES), [policy])
    return SimulationReport(task, conversation, sampled, scores)


@contextmanager
def phase_progress(console: Console | None) -> Iterator[Callable[..., None]]:
    """A live line (spinner, phase k/n, elapsed time, the policy's requests and tokens per second) on stderr, so a
    run of minutes is never silent; nothing when `console` is None."""
    if console is None:
        yield lambda *_args, **_kwargs: None
        return
    started = time.monotonic()
    status = console.status("starting")
    backends: list[Backend] = []

    def line(index: int) -> str:
        elapsed = time.monotonic() - started
        tokens = sum(b.stats.prompt_tokens + b.stats.completion_tokens for b in backends)
        what = PHASES[index] if index < len(PHASES) else "done"
        return (f"[{min(index + 1, len(PHASES))}/{len(PHASES)}] {what} · {usage_line(backends)} · "
                f"{tokens / max(elapsed, 1e-9):,.0f} tokens/s · {elapsed:.0f} s")

    def phase(index: int, seen: list[Backend] | None = None) -> None:
        backends[:] = seen or backends
        status.update(line(index))
        if index >= len(PHASES):
            console.print(f"simulated in {time.monotonic() - started:.0f} s · {usage_line(backends)}",
                          highlight=False)

    with status:
        yield phase


def render(report: SimulationReport, console: Console, *, show_rollouts: bool = False) -> None:
    task = report.task
    console.rule(f"task {task.id} ({task.kind}, needs clarification: {task.needs_clarification})")
    console.print(f"[dim]hidden goal:[/dim] {task.goal}")
    for m in report.conversation.messages:
        style = "cyan" if m["role"] == "user" else "green"
        console.print(f"[{style}]{m['role']:>9}[/{style}] {m['content']}")
    if report.conversation.failed:
        console.print(f"[red]conversation failed: {report.conversation.failed}[/red]")
    table = Table(title="MR of candidate first responses", show_lines=True)
    for col in ("strategy", "candidate", "MR", "std", "task", "tokens", "interactivity", "asked"):
        table.add_column(col, overflow="fold")
    for cand, score in zip(report.candidates, report.scores):
        c = score.components
        fmt = lambda key: f"{c[key]:.3f}" if key in c else "-"
        mr = f"{score.mr:.3f}" if score.mr is not None else f"failed: {score.error}"
        table.add_row(cand.strategy, cand.text[:300], mr, f"{score.std:.3f}", fmt("task"), fmt("tokens"),
                      fmt("interactivity"), fmt("asked"))
    console.print(table)
    if show_rollouts:
        render_rollouts(report, console)


def render_rollouts(report: SimulationReport, console: Console) -> None:
    """The future turns behind each candidate's MR: every rollout's transcript after the candidate, and its R*."""
    for number, (cand, score) in enumerate(zip(report.candidates, report.scores), start=1):
        mr = f"{score.mr:.3f}" if score.mr is not None else "failed"
        console.rule(f"candidate {number} ({cand.strategy}): MR {mr} = mean of {len(score.rollouts)} rollouts")
        for index, rollout in enumerate(score.rollouts, start=1):
            reward = f"{rollout.reward:.3f}" if rollout.reward is not None else f"failed: {rollout.error}"
            parts = " ".join(f"{k} {v:.3f}" for k, v in rollout.components.items())
            console.print(f"[bold]rollout {index}[/bold]: R* {reward} ({parts})", highlight=False)
            for m in rollout.messages:
                style = "cyan" if m["role"] == "user" else "green"
                console.print(f"  [{style}]{m['role']:>9}[/{style}] ", end="")
                console.print(m["content"], markup=False, highlight=False)
