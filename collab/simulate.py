"""`collab simulate`: one conversation between the policy and the simulated user, then the MR of a few candidate
first responses with their breakdown. The quickest way to see what a recipe's reward prefers."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from collab.candidates import Strategy, assign_strategies, sample_candidates
from collab.chat import SamplingParams
from collab.config import DataStage, Recipe
from collab.factory import build_policy, build_reward, build_simulator
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


def simulate(recipe: Recipe, *, task_index: int = 0, candidates: int = 4, seed: int = 0) -> SimulationReport:
    tasks = load_task_set(recipe.tasks.name, split=recipe.tasks.split, limit=recipe.tasks.limit, seed=recipe.tasks.seed)
    task = tasks[task_index % len(tasks)]
    policy = build_policy(recipe)
    simulator = build_simulator(recipe)
    reward = build_reward(recipe, policy, simulator)
    params = SamplingParams(
        max_new_tokens=recipe.reward.policy_max_new_tokens, temperature=recipe.reward.policy_temperature, seed=seed
    )
    engine = RolloutEngine(policy, simulator, params=params, system_prompt=recipe.model.system_prompt)
    conversation = ConversationState(task, [], seed=seed, max_assistant_turns=recipe.simulator.max_turns)
    engine.run([conversation])

    opening = simulator.respond([(task, [])], seeds=[seed])[0]
    history = [{"role": "user", "content": opening.text or ""}]
    data_stage = next((s for s in recipe.stages if isinstance(s, DataStage)), None)
    strategies: list[Strategy] = list(data_stage.strategies) if data_stage else ["sample", "proactive", "ask", "answer"]
    sampled = sample_candidates(
        policy, [(task, history)], assign_strategies(strategies, candidates), params,
        system_prompt=recipe.model.system_prompt, seed=seed,
    )[0]
    return SimulationReport(task, conversation, sampled, reward.score(sampled, seed=seed))


def render(report: SimulationReport, console: Console) -> None:
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
        fmt = lambda key: f"{c[key]:.3f}" if key in c else "-"  # noqa: E731
        mr = f"{score.mr:.3f}" if score.mr is not None else f"failed: {score.error}"
        table.add_row(cand.strategy, cand.text[:300], mr, f"{score.std:.3f}", fmt("task"), fmt("tokens"),
                      fmt("interactivity"), fmt("asked"))
    console.print(table)
