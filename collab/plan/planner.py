"""`plan_recipe`: a recipe's stages -> counts and costs per stage, without running anything.

Sizes come from the recipe (tasks.limit, the stages' settings, trainer arguments with the TRL config's defaults),
assumptions from `TokenAssumptions` and `Throughput`. A trainer stage's rows are estimated from its data stage,
unless that stage has finished in the run directory: then its stats.json gives the real counts.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collab.config import BackendConfig, DataStage, EvalStage, Recipe, StageBase, TrainerStage
from collab.errors import CollabError
from collab.plan.cost import (
    Steps,
    Throughput,
    api_cost,
    api_hours,
    generation_gpu_hours,
    optimizer_steps,
    training_gpu_hours,
)
from collab.plan.counts import (
    Counts,
    DataShape,
    EvalShape,
    MRSettings,
    OnlineShape,
    TokenAssumptions,
    data_counts,
    data_rows,
    eval_counts,
    online_counts,
    row_tokens,
)
from collab.plan.kvcache import EngineFit, check_engines
from collab.stages.kinds import KINDS

PARTIES = ("policy", "simulator", "judge")


@dataclass
class Scenario:
    """One column of a stage's plan (the upper bound or the expected value).

    Parameters:
        counts: Requests and tokens of each party.
        api_usd: USD per party served by an API with a stated price; None for an API party without a price.
        generation_gpu_hours: GPU-hours of parties served on local GPUs (the policy, local simulators or judges).
        steps: Optimizer steps of a trainer stage; None for data and eval stages.
        training_gpu_hours: GPU-hours of the optimizer steps.
        api_hours: Hours spent waiting on API parties (`Throughput.api_latency_s` at each backend's concurrency).
    """

    counts: Counts
    api_usd: dict[str, float | None] = field(default_factory=dict)
    generation_gpu_hours: float = 0.0
    steps: Steps | None = None
    training_gpu_hours: float = 0.0
    api_hours: float = 0.0

    @property
    def total_usd(self) -> float | None:
        """Sum of the priced parties; None when some API party has no price."""
        if any(v is None for v in self.api_usd.values()):
            return None
        return sum(v for v in self.api_usd.values() if v is not None)

    @property
    def gpu_hours(self) -> float:
        return self.generation_gpu_hours + self.training_gpu_hours

    def wall_hours(self, gpus: int) -> float:
        """GPU work spread over `gpus` GPUs, plus the API waits (the engine alternates the two, so they add)."""
        return self.gpu_hours / gpus + self.api_hours


@dataclass
class StagePlan:
    """The plan of one stage: both columns and the notes that qualify them."""

    label: str
    kind: str
    bound: Scenario
    expected: Scenario
    notes: list[str] = field(default_factory=list)


@dataclass
class RecipePlan:
    """The plan of a recipe's stages, with the assumptions it used and the vLLM engines those stages build (their
    KV cache on a GPU of `throughput.gpu_memory_gb`)."""

    recipe: str
    stages: list[StagePlan]
    tokens: TokenAssumptions
    throughput: Throughput
    engines: list[EngineFit] = field(default_factory=list)


@dataclass(frozen=True)
class TaskCounts:
    """Overrides of the number of tasks, for task sets that cannot be counted without loading them.

    Parameters:
        train: Tasks of `tasks.split` (data and online stages).
        eval: Tasks of `tasks.eval_split` (eval stages).
    """

    train: int | None = None
    eval: int | None = None


def plan_recipe(
    recipe: Recipe,
    *,
    stage: str | None = None,
    tokens: TokenAssumptions | None = None,
    throughput: Throughput | None = None,
    tasks: TaskCounts | None = None,
    run_dir: Path | None = None,
) -> RecipePlan:
    """Plan every stage of `recipe` (or the one named `stage`), with the default assumptions unless given.

    `run_dir` (default: the recipe's) is only read: a finished data stage's stats.json gives real row counts.
    """
    tokens, throughput, tasks = tokens or TokenAssumptions(), throughput or Throughput(), tasks or TaskCounts()
    stages = [recipe.stage(stage)] if stage else list(recipe.stages)
    planner = _Planner(recipe, tokens, throughput, tasks, Path(run_dir) if run_dir else recipe.run_dir)
    engines = check_engines(recipe, [s.label for s in stages], gpu_memory_gb=throughput.gpu_memory_gb, tokens=tokens)
    return RecipePlan(recipe.name, [planner.plan(s) for s in stages], tokens, throughput, engines)


class _Planner:
    def __init__(self, recipe: Recipe, tokens: TokenAssumptions, throughput: Throughput, tasks: TaskCounts,
                 run_dir: Path) -> None:
        self.recipe, self.tokens, self.throughput, self.tasks, self.run_dir = recipe, tokens, throughput, tasks, run_dir
        r = recipe.reward
        self.mr = MRSettings(window=r.window, samples=r.samples, judged=r.interactivity == "judge",
                             rollout_max_new_tokens=r.policy_max_new_tokens)
        self.llm_user = recipe.simulator.kind == "llm"

    def plan(self, stage: StageBase) -> StagePlan:
        if isinstance(stage, DataStage):
            return self._data(stage)
        if isinstance(stage, EvalStage):
            return self._eval(stage)
        assert isinstance(stage, TrainerStage)
        if KINDS[stage.kind].online is None:
            return self._offline(stage)
        return self._online(stage)

    # --- sizes ---------------------------------------------------------------------------------------------------

    def task_count(self, name: str, split: str, limit: int | None, override: int | None) -> int:
        """Tasks of a set: the override, else the limit (an upper bound), else the loaded set's size."""
        if override is not None:
            return override
        if limit is not None:
            return limit
        fix = "set tasks.limit, or pass --tasks-count N (--eval-tasks-count N for eval stages)."
        if _needs_download(name):
            raise CollabError(f"cannot count the tasks of '{name}' (split {split}) without downloading it",
                              where="tasks.limit", fix=fix)
        from collab.tasks.registry import load_task_set

        try:
            return len(load_task_set(name, split=split, limit=None, seed=self.recipe.tasks.seed))
        except Exception as e:  # noqa: BLE001 - any failure to load means: the user must say how many
            raise CollabError(f"cannot count the tasks of '{name}' (split {split}) without loading them: {e}",
                              where="tasks.limit", fix=fix) from None

    def train_tasks(self) -> int:
        t = self.recipe.tasks
        return self.task_count(t.name, t.split, t.limit, self.tasks.train)

    def max_turns(self, stage: DataStage) -> int:
        return min(stage.max_turns, self.recipe.simulator.max_turns)

    def data_shape(self, stage: DataStage) -> DataShape:
        return DataShape(conversations=self.train_tasks(),
                         max_turns=self.max_turns(stage), candidates=stage.candidates,
                         max_new_tokens=stage.max_new_tokens, batch_conversations=stage.batch_conversations,
                         llm_user=self.llm_user)

    def source(self, stage: TrainerStage) -> DataStage | None:
        if stage.data_from is None:
            return None
        found = self.recipe.stage(stage.data_from)
        return found if isinstance(found, DataStage) else None

    def measured_rows(self, source: DataStage) -> dict[str, Any] | None:
        path = self.run_dir / source.label / "stats.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def rows(self, stage: TrainerStage, source: DataStage, expected: bool, notes: list[str]) -> float:
        """Train-split rows an offline stage reads: DPO pairs for dpo, SFT rows (one per scored turn) for sft."""
        stats = self.measured_rows(source)
        key = "pairs" if stage.kind == "dpo" else "sft_rows"
        if stats is not None and isinstance(stats.get(key), dict) and "train" in stats[key]:
            self.note_measured(source, notes)
            return float(stats[key]["train"])
        shape = self.data_shape(source)
        turns = min(self.tokens.mean_turns, shape.max_turns) if expected else float(shape.max_turns)
        sft, pairs = data_rows(self.tokens, shape.conversations, turns, eval_fraction=source.eval_fraction,
                               candidates=source.candidates, pairs=source.pairs)
        return pairs if stage.kind == "dpo" else sft

    def prompts(self, source: DataStage | None, expected: bool, notes: list[str]) -> tuple[float, float, int]:
        """(prompts, mean turns of their conversations, turn limit) of an online stage (collab.train.online_data):
        every task's opening, plus with `data_from` every later state the data stage reached (no eval split)."""
        if source is None:
            return float(self.train_tasks()), 1.0, 1
        limit = self.max_turns(source)
        stats = self.measured_rows(source)
        if stats is not None and isinstance(stats.get("turns"), int) and stats.get("conversations"):
            self.note_measured(source, notes)
            return float(stats["turns"]), stats["turns"] / stats["conversations"], limit
        turns = min(self.tokens.mean_turns, limit) if expected else float(limit)
        return self.train_tasks() * turns, turns, limit

    def note_measured(self, source: DataStage, notes: list[str]) -> None:
        note = f"rows measured: {self.run_dir / source.label / 'stats.json'}"
        if note not in notes:
            notes.append(note)

    def processes(self, stage: TrainerStage) -> int:
        """Trainer processes: one with the `cpu` accelerate config, else one per GPU."""
        return 1 if stage.accelerate_config == "cpu" else self.throughput.gpus

    def step_shape(self, stage: TrainerStage, args: dict[str, Any], gpus: int, notes: list[str]) -> tuple[int, int]:
        """(per_device_train_batch_size, gradient_accumulation_steps) of a run on `gpus` processes. A stage that
        states effective_batch_size keeps it: planned with the accumulation `collab launch slurm --scale-batch`
        would set (a launch without it is refused), not with a batch no run would train with."""
        from collab.train.batch import batch_plan, scaled_accumulation

        per_device, accumulation = int(args["per_device_train_batch_size"]), int(args["gradient_accumulation_steps"])
        stated = batch_plan(stage, gpus)
        if stated.matches:
            return per_device, accumulation
        try:
            scaled = scaled_accumulation(stage, gpus)
        except CollabError:
            notes.append(f"effective_batch_size {stated.declared}: no gradient_accumulation_steps keeps it on {gpus} "
                         f"processes, so a launch is refused; planned with the batch {stated.effective} they give")
            return per_device, accumulation
        notes.append(f"effective_batch_size {stated.declared} kept on {gpus} processes: gradient_accumulation_steps "
                     f"{accumulation} -> {scaled}, as `collab launch slurm --scale-batch` sets it (a launch without "
                     "it is refused)")
        return per_device, scaled

    def trainer_args(self, stage: TrainerStage) -> dict[str, Any]:
        """The stage's trainer arguments over the TRL config class's defaults."""
        from collab.config import trainer_args_with_defaults

        return trainer_args_with_defaults(stage.kind, stage.trainer)

    # --- costs ---------------------------------------------------------------------------------------------------

    def price(self, scenario: Scenario, party: str, backend: BackendConfig | None, *, local: bool = False,
              processes: int = 1) -> None:
        """Add one party's cost: API dollars and waiting time for an `openai` backend, GPU-hours for a local one."""
        usage = getattr(scenario.counts, party)
        if usage.requests == 0 or (backend is None and not local):
            return
        if not local and backend is not None and backend.kind == "openai":
            scenario.api_usd[party] = api_cost(usage, backend.price_per_million)
            scenario.api_hours += api_hours(usage.requests, backend.concurrency, processes, self.throughput)
        else:
            scenario.generation_gpu_hours += generation_gpu_hours(usage, self.throughput)

    def price_all(self, scenario: Scenario, *, policy_local: bool, processes: int) -> Scenario:
        """Price the three parties; `processes` run side by side, each with its own API clients."""
        sim = self.recipe.simulator.backend if self.llm_user else None
        self.price(scenario, "policy", None if policy_local else self.recipe.policy, local=policy_local,
                   processes=processes)
        self.price(scenario, "simulator", sim, processes=processes)
        self.price(scenario, "judge", self.recipe.judge.backend if self.mr.judged else None, processes=processes)
        return scenario

    def notes_for_prices(self, plan: StagePlan) -> None:
        for party, usd in plan.bound.api_usd.items():
            if usd is None:
                plan.notes.append(f"{party}: its backend has no price_per_million, so its API cost is unknown")

    # --- stage kinds ---------------------------------------------------------------------------------------------

    def _data(self, stage: DataStage) -> StagePlan:
        shape = self.data_shape(stage)
        # One data shard per GPU (`collab data --shard i/n`, or the Slurm array), each with its own API clients.
        scenarios = [self.price_all(Scenario(data_counts(self.tokens, shape, self.mr, expected=e)),
                                    policy_local=self.recipe.policy.kind != "openai", processes=self.throughput.gpus)
                     for e in (False, True)]
        plan = StagePlan(stage.label, "data", *scenarios)
        plan.notes.append(f"{shape.conversations} conversations x <= {shape.max_turns} turns, K={shape.candidates} "
                          f"candidates per turn, each scored by S={self.mr.samples} rollouts of w={self.mr.window} "
                          f"turns" + (" + 1 judge request" if self.mr.judged else ""))
        if not self.llm_user:
            plan.notes.append("scripted simulator: its turns cost no tokens")
        self.notes_for_prices(plan)
        return plan

    def _offline(self, stage: TrainerStage) -> StagePlan:
        source = self.source(stage)
        plan = StagePlan(stage.label, stage.kind, Scenario(Counts()), Scenario(Counts()))
        if source is None:
            plan.notes.append("no data stage in data_from: rows unknown")
            return plan
        args = self.trainer_args(stage)
        gpus = self.processes(stage)
        per_device, accumulation = self.step_shape(stage, args, gpus, plan.notes)
        batch = per_device * accumulation * gpus
        for scenario, expected in ((plan.bound, False), (plan.expected, True)):
            rows = self.rows(stage, source, expected, plan.notes)
            unit = "DPO pairs" if stage.kind == "dpo" else "SFT rows"
            steps = optimizer_steps(rows, unit, batch, float(args["num_train_epochs"]), int(args["max_steps"]))
            turns = min(self.tokens.mean_turns, self.max_turns(source)) if expected else float(self.max_turns(source))
            trained = steps.total * batch if int(args["max_steps"]) > 0 else rows * steps.epochs
            tokens = trained * row_tokens(self.tokens, turns, source.max_new_tokens, stage.kind)
            scenario.steps = steps
            scenario.training_gpu_hours = training_gpu_hours(tokens, self.throughput, reference=KINDS[stage.kind].reference_model)
        plan.notes.append(f"effective batch {batch} = per_device_train_batch_size x gradient_accumulation_steps x "
                          f"{gpus} processes")
        return plan

    def _online(self, stage: TrainerStage) -> StagePlan:
        source = self.source(stage)
        plan = StagePlan(stage.label, stage.kind, Scenario(Counts()), Scenario(Counts()))
        args = self.trainer_args(stage)
        gpus = self.processes(stage)
        per_device, accumulation = self.step_shape(stage, args, gpus, plan.notes)
        epochs, max_steps = float(args["num_train_epochs"]), int(args["max_steps"])
        pairs = KINDS[stage.kind].online == "pairs"  # OnlineDPO: two completions per prompt
        if pairs:
            generations, iterations = 2, 1
            cap = int(args["max_new_tokens"])
            batch = per_device * accumulation * gpus  # prompts per optimizer step
            per_round = 2 * per_device * gpus
            reference = True
        else:
            generations, iterations = int(args["num_generations"]), int(args.get("num_iterations") or 1)
            cap = int(args["max_completion_length"])
            batch = per_device * accumulation * gpus  # completions per optimizer step
            per_round = per_device * gpus * int(args.get("steps_per_generation") or accumulation)
            reference = float(args.get("beta") or 0) > 0
        for scenario, expected in ((plan.bound, False), (plan.expected, True)):
            prompts, turns, limit = self.prompts(source, expected, plan.notes)
            if pairs:
                steps = optimizer_steps(prompts, "prompts", batch, epochs, max_steps)
                completions = (steps.total * batch if max_steps > 0 else prompts * epochs) * 2
            else:
                steps = optimizer_steps(prompts * generations * iterations, "completion passes", batch, epochs,
                                        max_steps)
                completions = (steps.total * batch / iterations if max_steps > 0 else prompts * generations * epochs)
            shape = OnlineShape(completions=completions, generation_rounds=math.ceil(completions / per_round),
                                turns=turns, max_turns=limit, max_new_tokens=cap, llm_user=self.llm_user,
                                fill=self.tokens.rollout_fill if expected else 1.0)
            scenario.counts = online_counts(self.tokens, shape, self.mr)
            self.price_all(scenario, policy_local=True, processes=gpus)  # one reward function per trainer process
            sequence = row_tokens(self.tokens, turns, cap, "sft")  # prompt + one completion
            scenario.steps = steps
            scenario.training_gpu_hours = training_gpu_hours(completions * iterations * sequence, self.throughput,
                                                             reference=reference)
        origin = "every task's opening and every later state of the data stage" if source else "every task's opening"
        unit = "prompts" if pairs else "completions"
        plan.notes.append(f"{generations} completions per prompt, each scored by MR; prompts: {origin}; effective "
                          f"batch {batch} {unit} per step on {gpus} processes")
        self.notes_for_prices(plan)
        return plan

    def _eval(self, stage: EvalStage) -> StagePlan:
        labels = [s.label for s in self.recipe.stages]
        index = labels.index(stage.label)
        trained = [s for s in self.recipe.stages[:index] if isinstance(s, TrainerStage)]
        models = len(stage.models) or 1 + len(trained)
        t = self.recipe.tasks
        # Optional per-stage settings (a transfer evaluation on another task set), as collab.evaluate reads them.
        name, split = getattr(stage, "tasks", None) or t.name, getattr(stage, "split", None) or t.eval_split
        limit = getattr(stage, "limit", None) or t.limit
        tasks = self.task_count(name, split, limit, self.tasks.eval)
        max_turns = getattr(stage, "max_turns", None) or self.recipe.simulator.max_turns
        max_new_tokens = getattr(stage, "max_new_tokens", None) or self.recipe.reward.policy_max_new_tokens
        shape = EvalShape(models=models, tasks=tasks, runs=stage.runs, max_turns=max_turns,
                          max_new_tokens=max_new_tokens, batch_conversations=self.recipe.policy.max_batch_size, llm_user=self.llm_user,
                          judged=self.mr.judged)
        scenarios = [self.price_all(Scenario(eval_counts(self.tokens, shape, expected=e)), policy_local=True,
                                    processes=1) for e in (False, True)]
        plan = StagePlan(stage.label, "eval", *scenarios)
        plan.notes.append(f"{models} models x {shape.tasks} tasks x {shape.runs} runs, <= {shape.max_turns} turns "
                          "per conversation")
        self.notes_for_prices(plan)
        return plan


def _needs_download(name: str) -> bool:
    """A CollabLLM hub task set with no local copy (COLLAB_HUB_DATA_DIR): counting it would mean a download."""
    from collab.tasks import collabllm_hub

    short = name.removeprefix("collabllm-")
    return name != short and short in collabllm_hub.HUB_DATASETS and not os.environ.get(collabllm_hub.DATA_DIR_ENV)
